"""The Discord-free core: jobs, plans, quotas, challenges, styles and progress, usable from the CLI, the bot and tests."""
