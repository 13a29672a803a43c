# Rasa imports this package when it starts its REST channel (credentials.yml) and when
# it loads the model: its action-result check is made cheap (action_validation.py), a
# turn is kept whole or not at all (whole_turns.py), and its logs carry no email, phone
# number or street address whole.
from common.privacy import install_log_redaction
from components import action_validation, whole_turns

action_validation.install()
whole_turns.install()
install_log_redaction()
