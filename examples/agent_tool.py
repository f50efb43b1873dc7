"""An LLM-style tool that lists the user's files through tokenbroker.

The model never sees a token: the tool calls the broker, which adds the user's credentials.
When the user has not connected the account yet, the tool returns a sentence with the connect
link for the model to pass on, instead of failing.

    python examples/agent_tool.py --broker http://127.0.0.1:8000 --token $TOKEN
"""

from __future__ import annotations

import argparse
import json

from tokenbroker.client import (
    AuthorizationRequired,
    Broker,
    BrokerError,
    InsufficientGrant,
)


def list_files(broker: Broker, provider: str = "demo") -> str:
    """Tool: list the user's files. Always returns text the model can show the user."""
    try:
        response = broker.request("GET", provider, "/files")
    except AuthorizationRequired as exc:
        return f"Please connect your Demo account: {exc.authorization_url}"
    except InsufficientGrant as exc:
        missing = ", ".join(exc.missing_scopes) or exc.missing_operation or exc.reason
        return f"This assistant is not allowed to do that yet; it needs: {missing}."
    except BrokerError as exc:
        return f"The file service is unavailable right now ({exc.code}); please try again later."
    if response.status_code != 200:
        return f"The Demo API answered {response.status_code}: {response.text[:200]}"
    return json.dumps(response.json(), indent=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--broker", required=True, help="the broker's public URL")
    parser.add_argument("--token", required=True, help="an agent session token (tbs....)")
    parser.add_argument("--provider", default="demo", help="provider name (default: demo)")
    args = parser.parse_args()
    with Broker(args.broker, args.token) as broker:
        print(list_files(broker, args.provider))


if __name__ == "__main__":
    main()
