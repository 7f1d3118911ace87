"""Control plane: the FastAPI app that places calls and answers Twilio's webhooks (Lambda or all-in-one)."""
