# Rasa imports this package when it loads the model; its action-result check is made
# cheap here (see action_validation.py).
from components import action_validation

action_validation.install()
