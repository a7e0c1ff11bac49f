"""Challenges: themed rounds with submission, voting and prizes paid in bonus credits."""
