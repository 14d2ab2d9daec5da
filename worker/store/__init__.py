"""All SQL lives here. Functions take a session or connection and never commit: the caller owns the transaction."""
