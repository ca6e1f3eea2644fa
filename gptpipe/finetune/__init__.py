"""Fine-tuning data and metrics: instruction records, labelled texts, splits and batches."""
