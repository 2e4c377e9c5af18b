"""Text coding for payload version 2: a static language model driving an arithmetic coder."""
