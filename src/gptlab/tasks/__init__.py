"""The Lightning tasks: causal language modelling (``lm``), text classification (``classification``), their
shared base (``base``) and metrics (``metrics``), and the registry (``registry``) that says, for the class a
checkpoint names, which module, data, predictor and exporter it uses."""
