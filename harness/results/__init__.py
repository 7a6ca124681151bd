"""The formats a run writes: the arm folder (arm_folder: result.json, predictions.jsonl, golden rows;
its one reader and writer), ArmResult and results.json (arm_result), and the audit of what arms
consumed (audit)."""
