"""Energy, power, temperature and environment measurement (NVML, RAPL)."""
