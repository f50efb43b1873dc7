"""The connect flow: a connect session, the browser's authorization, and the user's proof."""
