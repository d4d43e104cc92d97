"""The stream app: Faust wiring, Redis feature store, rules, drift, emitters, HTTP views."""
