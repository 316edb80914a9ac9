"""What a trained model is measured by and used for: reconstruction reports, codes and
probes, anomaly scores, latent maps, denoising / imputation / generation.
"""
