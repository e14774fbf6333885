"""gruwatch's model side (GRU, features, calibration). Imports torch and numpy only."""
