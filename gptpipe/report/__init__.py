"""The report: inputs read from artifacts, figures and Markdown."""
