"""gruwatch's streaming side: settings, the event contract, the local stack, replay/record and the CLI."""
