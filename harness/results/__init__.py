"""ArmResult and results.json (arm_result), and the audit of what arms consumed (audit)."""
