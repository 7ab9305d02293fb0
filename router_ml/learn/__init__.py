"""Learning a router: data sources and a team's tables, labels, evaluation protocols, the
scikit-learn estimator, the training recipe, evaluation reports, the monthly bill and
experiment tracking."""
