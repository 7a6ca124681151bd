"""Step 3: running arms. Parent side: runner (processes, resume, results.json). Arm side:
arm_process (the entry point) -> single_task or multi_task (the arm bodies). Both sides share
arm_common (events, seeding, the arm summary) and provenance."""
