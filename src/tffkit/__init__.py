"""tffkit — explain and harden detectors of CNN-generated images.

Implements "Discovering Transferable Forensic Features for CNN-generated Images Detection"
(ECCV 2022): LRP through the detector, the FF-RS statistic ω, feature-map dropout, LRP-max,
colour ablation with Mood's median test and colour-robust training.
"""

__version__ = "0.1.0"
