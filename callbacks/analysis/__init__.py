"""Analysis callbacks: they only read the model and data, and write figures and tables into `<run dir>/figures/`."""
