"""The autoencoder family as named config overrides of the main job.

Each entry is what a user types after `mmae-train` to get that variant; the comparison
script and the tests train every one of them on the same synthetic data.
"""

VARIANTS: dict[str, list[str]] = {
    "undercomplete AE": [],
    "overcomplete + L1 + noise": ["model.latent_dim=64", "objective=sparse_l1", "corruption=gaussian"],
    "denoising: gaussian": ["corruption=gaussian"],
    "denoising: masking": ["corruption=masking"],
    "denoising: salt & pepper": ["corruption=salt_pepper"],
    "sparse: L1": ["objective=sparse_l1"],
    "sparse: KL (sigmoid code)": ["objective=sparse_kl", "corruption=modality_dropout"],
    "contractive": ["objective=contractive"],
    "k-sparse (top-k)": ["model=ksparse"],
    "binary code (hash)": ["model.latent_activation=binary"],
    "AE, concat fusion": ["fusion=concat"],
    "AE, attention fusion": ["fusion=attention"],
    "VAE, mean fusion": ["model=vae"],
    "VAE, poe": ["model=vae", "fusion=poe"],
    "VAE, moe": ["model=vae", "fusion=moe"],
    "VAE, mopoe": ["model=vae", "fusion=mopoe"],
}
