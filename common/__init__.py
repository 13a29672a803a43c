"""What the gateway, Rasa and the action server all use: paths, log redaction, policy
files, SQL engines, time formats. It imports nothing of the project."""
