"""Step 3: running arms. Parent side: runner (processes, resume, results.json). Arm side:
arm_process (the entry point) -> arm_lifecycle (the phases of every arm), configured by
single_task_arm or multi_task_arm (its two shapes). Both sides share arm_common (events, seeding, the
arm summary) and provenance."""
