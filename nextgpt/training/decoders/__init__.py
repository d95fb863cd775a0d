"""Train the nano decoders on the world: per modality a VAE, (audio) a vocoder, then the UNet.

    python scripts/train_decoders.py --data data/world --out checkpoints/nano --modality image --part all

The decoders are the stock diffusers pipelines of `nextgpt.decode` (StableDiffusion / TextToVideoSD /
AudioLDM) at small sizes. Their caption encoder, all-MiniLM-L6-v2, is pretrained and stays frozen; it ships
in a package and is never written to the checkpoint. The parts of one modality train in order:

    vae      AutoencoderKL on world media (images; video frames; AudioLDM log-mel spectrograms): MSE + small KL,
             then `scaling_factor` = 1 / RMS of the latents (SD's "latent std", about zero: the stock
             pipelines divide by it and never shift)
    vocoder  (audio) HarmonicHifiGan (SpeechT5HifiGan + a harmonic source at the mel's pitch, nextgpt/vocoder.py),
             log-mel -> waveform: L1 on the log-mel of its output + multi-resolution STFT loss floored under the
             target's peak (a buzz's harmonics count); no GAN: the world's sounds are tones and buzzes
    unet     DDPM loss on scaled latents (DDPMScheduler with the pipeline scheduler's betas; epsilon target for
             the image, v for audio and video, written to the pipeline's scheduler config), conditioned on the
             frozen caption encodings, 10 % of them replaced by the encoding of "" so classifier-free guidance works
    vae_decoder  (video, after the unet) more training of the VAE decoder alone: the encoder, hence the latents
             the UNet learnt and the scaling factor, stay as they were
    eval     generate from held-out captions and seeds through `Decoders`, judge the media with the world's
             rule-based judges; for images and video also the VAE round trip of held-out media (what the VAE
             alone keeps) -> ``<out>/decoders/metrics.json``

Each part writes only its own component (fp16 safetensors) into ``<out>/decoders/<modality>/<component>/``;
the folder itself (model_index.json, scheduler, null condition) is written once by `Decoders.save`. Media are
decoded once into a tensor cache, latents are cached once the VAE is trained. Every part trains on the one loop
(nextgpt.training.loop) and is resumable: ``<run_dir>/<modality>/<part>/state`` holds the weights, optimizer and
step (atomic), and the data order and noise of step k are fixed by the seed, so an interrupted run ends where an
uninterrupted one ends.

The package, one file per concern:

    settings    PartSettings, the per-modality recipes, DecoderTrainArgs, --set parsing, PartSettings -> the loop
    audio       AudioLDM's log-mel, the multi-resolution STFT loss
    media       the world's media of one modality as tensors, cached
    components  the pipeline folder: fresh components, frame positions, fp16 saving, model_index.json
    vae / vocoder / unet   one part each: its loss and its train_* function
    evaluation  generate + judge, the VAE round trip, metrics.json
    run         run_part / run: the parts in order, then the evaluation

The world's own terms (the direction hinge of the video UNet, the foreground weight of the VAE) come from
nextgpt.world.training as hooks.
"""


from nextgpt.decoder_configs import DecoderSizes
from nextgpt.training.decoders.audio import LogMel, spectral_loss
from nextgpt.training.decoders.components import (decoder_folder, ensure_folder, fresh_component, register_class,
                                                  save_component, with_frame_positions)
from nextgpt.training.decoders.evaluation import METRICS_FILE, evaluate, merge_metrics, vae_round_trip
from nextgpt.training.decoders.media import WorldMedia, load_media
from nextgpt.training.decoders.run import run, run_part
from nextgpt.training.decoders.settings import (PARTS, RECIPES, SMOKE_SETTINGS, DecoderTrainArgs, PartSettings,
                                                Recipe, _settings, parse_settings)
from nextgpt.training.decoders.unet import caption_conditions, sampler_for, train_unet
from nextgpt.training.decoders.vae import cache_latents, train_vae
from nextgpt.training.decoders.vocoder import train_vocoder

__all__ = [
    "DecoderSizes", "DecoderTrainArgs", "LogMel", "METRICS_FILE", "PARTS", "PartSettings", "RECIPES", "Recipe",
    "SMOKE_SETTINGS", "WorldMedia", "_settings", "cache_latents", "caption_conditions", "decoder_folder",
    "ensure_folder", "evaluate", "fresh_component", "load_media", "merge_metrics", "parse_settings",
    "register_class", "run", "run_part", "sampler_for", "save_component", "spectral_loss", "train_unet", "train_vae",
    "train_vocoder", "vae_round_trip", "with_frame_positions",
]
