"""Code that the broker (API) and the workers both use. It imports neither of them."""
