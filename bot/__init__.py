"""The Discord side of brushfire: the bot, its settings, its services and error handling."""
