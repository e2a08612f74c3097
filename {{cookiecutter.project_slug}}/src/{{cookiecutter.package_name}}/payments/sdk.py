"""Stripe's SDK, imported at its first use rather than with the module.

`from <package>.payments.sdk import stripe` stands for `import stripe`: the first
attribute looked up on it (`stripe.StripeClient`, `stripe.StripeError` in an `except`
clause that an exception reaches, ...) imports the SDK. Nothing looks one up before a
request, a job or a command needs Stripe, so a process starts and answers its probes
without it (docs/benchmarks.md, start-up). Type checkers see the SDK itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import stripe as stripe
else:

    class _Stripe:
        """Every attribute from the `stripe` package, imported when first asked for."""

        def __getattr__(self, name: str) -> Any:
            import stripe

            return getattr(stripe, name)

        def __repr__(self) -> str:
            return "<stripe, imported at first use>"

    stripe = _Stripe()
