"""Stripe subscriptions: plans, checkout, customer portal, webhooks, plan gating.

Wired in by `modules.py`; needs the auth module (a customer belongs to a user).
"""
