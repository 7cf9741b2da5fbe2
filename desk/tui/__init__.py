"""The agent app (Textual). The only package of desk that imports Textual."""
