"""Quotas: pricing, the credit ledger, admin changes, reports and maintenance."""
