# rasa-sdk imports this package when the action server starts: from then on its logs,
# and the libraries', carry no email, phone number or street address whole.
from common.privacy import install_log_redaction

install_log_redaction()
