"""The reference replica loop and the gateway it drives (the workflow server's calls)."""
