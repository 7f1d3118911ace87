"""Media plane: the Twilio Media Streams <-> Gemini Live bridge."""
