"""What a service loads, numpy only: prompts, features, the fitted heads, prices, the knob,
coverage, the router and its saved artifact. Nothing here imports scikit-learn or torch at
load time."""
