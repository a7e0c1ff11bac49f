"""Slash commands and buttons, one module per feature; thin layers over the bot's services."""
