"""The production loop around a router: model clients, answer validators, the policy (rules,
escalation, fallback), the decision log and monitoring, and labelling a team's own traffic."""
