"""AWS CDK app: one Construct per unit (table, secrets, control API, media node), one thin Stack."""
