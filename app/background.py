"""The model, loaded in a background thread while the app is already served.

    model = BackgroundModel(lambda: NextGPT.from_preset("nano"), cfg=cfg, can_encode=True,
                            can_generate={Modality.IMAGE})
    demo = build_demo(model)      # the page shows cfg and the abilities at once
    model.start()                 # loading takes seconds (imports, weights); the first turn waits for it

What the first screen shows (preset, what the checkpoint reads and writes) comes from the checkpoint's files
(`nextgpt.loading.checkpoint_abilities`), so the page is ready before the weights are. `stream` waits for the
load, then runs the model's own `stream`, under `spaces.GPU` on a ZeroGPU Space (app/zerogpu.py). A load that
fails is logged once and every turn then says why, in the chat.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Iterator, Sequence

from nextgpt.config import GenerationSettings, Modality, NextGPTConfig
from nextgpt.model import ModelUnavailableError

from app.zerogpu import gpu_seconds, on_gpu

log = logging.getLogger(__name__)


class BackgroundModel:
    """A stand-in for a NextGPT while it loads: `cfg`, `can_encode` and `can_generate` at once, everything
    else (stream, chat, encoder, ...) from the loaded model, waiting for it first."""

    def __init__(self, load: Callable[[], Any], *, cfg: NextGPTConfig, can_encode: bool,
                 can_generate: set[Modality]) -> None:
        self.cfg = cfg
        self.can_encode = can_encode
        self.can_generate = set(can_generate)
        self._load = load
        self._model: Any = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        # decorated now, before the app is served (ZeroGPU registers GPU functions at start-up)
        self._gpu_stream = on_gpu(self._stream_loaded, seconds=gpu_seconds(cfg.name))

    # ---- loading ------------------------------------------------------------------------------------
    def start(self) -> "BackgroundModel":
        """Start loading in a daemon thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="model-load", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        t0 = time.perf_counter()
        try:
            model = self._load()
        except BaseException as err:  # noqa: BLE001 - kept and reported on every turn
            self._error = err
            log.error("the model could not be loaded: %s", err, exc_info=not isinstance(err, (OSError, ValueError)))
        else:
            if (bool(model.can_encode), set(model.can_generate)) != (self.can_encode, self.can_generate):
                log.error("the loaded model reads media=%s and writes %s, the page says %s and %s",
                          model.can_encode, sorted(m.value for m in model.can_generate), self.can_encode,
                          sorted(m.value for m in self.can_generate))
            self._model = model
            log.info("model ready in %.1f s (loaded in the background)", time.perf_counter() - t0)
        finally:
            self._done.set()

    @property
    def ready(self) -> bool:
        return self._done.is_set() and self._model is not None

    def wait(self, timeout: float | None = None) -> Any:
        """The loaded model (starting the load when nobody has); raises ModelUnavailableError when the load
        failed, TimeoutError when it takes longer than `timeout`."""
        self.start()
        if not self._done.wait(timeout):
            raise TimeoutError(f"the model is still loading after {timeout} s")
        if self._error is not None:
            raise ModelUnavailableError(f"The model could not be loaded ({type(self._error).__name__}: "
                                        f"{self._error}); the details are in the server log.")
        return self._model

    # ---- the model's interface ---------------------------------------------------------------------
    def _stream_loaded(self, messages: Sequence[dict[str, Any]], settings: GenerationSettings | None = None
                       ) -> Iterator[Any]:
        yield from self._model.stream(messages, settings)

    def stream(self, messages: Sequence[dict[str, Any]], settings: GenerationSettings | None = None
               ) -> Iterator[Any]:
        """The model's `stream`, once it is loaded (on the GPU of a ZeroGPU Space)."""
        self.wait()
        yield from self._gpu_stream(messages, settings)

    def chat(self, messages: Sequence[dict[str, Any]], settings: GenerationSettings | None = None) -> Any:
        """The model's `chat` (the whole reply at once), through `stream`."""
        reply = None
        for event in self.stream(messages, settings):
            reply = event.reply or reply
        return reply

    def __getattr__(self, name: str) -> Any:
        """Anything else is the loaded model's (waiting for it)."""
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.wait(), name)
