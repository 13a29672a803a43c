# Rasa imports this package when it loads the model: its action-result check is made
# cheap (action_validation.py), and its logs carry no email, phone number or street
# address whole.
from components import action_validation
from connectors.privacy import install_log_redaction

action_validation.install()
install_log_redaction()
