# The two commands of the README. Both create/refresh .venv first (scripts/bootstrap.sh).
.PHONY: run test bootstrap
ARGS ?=

bootstrap:
	@scripts/bootstrap.sh

run: bootstrap
	RAY_AUTH_MODE=disabled .venv/bin/python -m medmo_rl.run $(ARGS)

test: bootstrap
	.venv/bin/python -m pytest tests -q $(ARGS)
