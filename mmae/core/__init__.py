"""The model and its maths: the Modality interface, encoders + fusion + joint decoder,
Gaussian posteriors, likelihoods, loss terms, corruptions, shared network blocks and the
registry of component names. Plain torch: imports nothing else of mmae.
"""
