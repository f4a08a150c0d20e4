"""The latency model of a plan: table sums, calibrated against measured whole models, and the
paired measurement that puts a candidate's timing on the footing of its prediction."""

from mdp_trt.prediction.calibration import (CALIBRATIONS, Calibration, calibrate,
                                            calibration_through, probe_model)
from mdp_trt.prediction.paired import PairedTiming, paired_measure
from mdp_trt.prediction.plan_latency import layer_cell, layer_cells, table_sum

__all__ = ["CALIBRATIONS", "Calibration", "PairedTiming", "calibrate", "calibration_through",
           "layer_cell", "layer_cells", "paired_measure", "probe_model", "table_sum"]
