"""A chat backend that runs an open multimodal model locally with transformers.

The model loads through `AutoModelForImageTextToText` and its processor through `AutoProcessor`,
from a Hugging Face hub id or a local folder, so any architecture that transformers maps to
image-text-to-text (LLaVA, Qwen2-VL, Idefics3, Gemma 3, ...) works without code of its own. The
processor's chat template places the images and text of each message.

Requests run one at a time. A sampled request seeds torch with its own seed right before
generating, so its reply does not depend on the requests before it. A request that fails
(out of memory, an image that does not decode) returns a `ChatReply` with the error and the
other requests go on.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from microvqa_pp.agents.base import ChatBackend, ChatReply, ChatRequest, ImagePart, Message
from microvqa_pp.deps import require
from microvqa_pp.errors import MicroVQAError

logger = logging.getLogger(__name__)


class TransformersBackend(ChatBackend):
    """A chat backend on a local transformers image-text-to-text model."""

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        max_image_side: int | None = None,
        trust_remote_code: bool = False,
    ):
        """Configure the backend; the model loads on the first request (or with `load`).

        `model` is a hub id or a local folder. `device` is `auto` (CUDA, then Apple MPS, then
        the CPU) or a torch device name. `dtype` is `auto` (the checkpoint's dtype) or a torch
        dtype name such as `bfloat16`. Images whose longer side exceeds `max_image_side` pixels
        are shrunk first; None sends them as they are and leaves resizing to the processor.
        """
        self.model = model
        self.device_name = device
        self.dtype_name = dtype
        self.max_image_side = max_image_side
        self.trust_remote_code = trust_remote_code
        self._model: Any = None
        self._processor: Any = None
        self._device: Any = None
        self._counts = {"requests": 0, "failed": 0, "prompt_tokens": 0, "completion_tokens": 0}
        self._warned_schema = False

    def load(self) -> None:
        """Load the processor and the model, raising MicroVQAError when either cannot be found."""
        if self._model is not None:
            return
        torch = require("torch", "ml", "the local transformers backend")
        transformers = require("transformers", "ml", "the local transformers backend")
        try:
            self._processor = transformers.AutoProcessor.from_pretrained(self.model, trust_remote_code=self.trust_remote_code)
            model = transformers.AutoModelForImageTextToText.from_pretrained(
                self.model,
                dtype=self._dtype(torch),
                trust_remote_code=self.trust_remote_code,
            )
        except (OSError, ValueError) as error:
            where = "folder" if Path(self.model).exists() else "hub id"
            raise MicroVQAError(
                f"could not load the image-text-to-text model {self.model!r} ({where}): {error}. Pass a local "
                "folder saved with save_pretrained (model and processor), or a hub id that is reachable or in the "
                "local cache (HF_HUB_OFFLINE=1 allows only cached models)"
            ) from error
        self._device = self._pick_device(torch)
        self._model = model.to(self._device).eval()
        logger.info("loaded %s (%s) on %s", self.model, type(model).__name__, self._device)

    def complete(self, requests: Sequence[ChatRequest]) -> list[ChatReply]:
        self.load()
        replies = []
        for request in requests:
            try:
                replies.append(self._generate(request))
            except (RuntimeError, ValueError, OSError) as error:
                # RuntimeError covers CUDA out-of-memory; OSError an image file that does not decode.
                logger.warning("generation with %s failed: %s", self.model, error)
                self._counts["failed"] += 1
                replies.append(ChatReply(error="generation_failed", error_detail=f"{type(error).__name__}: {error}"))
        return replies

    def usage(self) -> dict[str, int]:
        return dict(self._counts)

    def close(self) -> None:
        self._model = None
        self._processor = None

    # Generation ------------------------------------------------------------------------------

    def _generate(self, request: ChatRequest) -> ChatReply:
        import torch

        if request.schema is not None and not self._warned_schema:
            # NOTE: there is no constrained decoding here, so a task that requests JSON parses free text.
            logger.warning("the transformers backend does not enforce JSON schemas; replies are free text")
            self._warned_schema = True

        conversation = [self._chat_message(message) for message in request.messages]
        inputs = self._processor.apply_chat_template(
            conversation,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
        )
        # Pixel values come as float32, and not every model casts them to its own dtype.
        inputs = inputs.to(self._device, dtype=self._model.dtype)
        generation: dict[str, Any] = {"max_new_tokens": request.max_tokens, "do_sample": request.temperature > 0}
        if request.temperature > 0:
            generation["temperature"] = request.temperature
            torch.manual_seed(request.seed if request.seed is not None else 0)

        with torch.inference_mode():
            output = self._model.generate(**inputs, **generation)
        prompt_length = inputs["input_ids"].shape[1]
        new_tokens = output[0, prompt_length:]
        text = self._processor.decode(new_tokens, skip_special_tokens=True).strip()

        usage = {"prompt_tokens": int(prompt_length), "completion_tokens": int(new_tokens.shape[0])}
        self._counts["requests"] += 1
        self._counts["prompt_tokens"] += usage["prompt_tokens"]
        self._counts["completion_tokens"] += usage["completion_tokens"]
        return ChatReply(text=text, usage=usage)

    def _chat_message(self, message: Message) -> dict[str, Any]:
        """Convert a message to the content-part format of transformers chat templates."""
        content = []
        for part in message.content:
            if isinstance(part, ImagePart):
                content.append({"type": "image", "image": self._open_image(part.path)})
            else:
                content.append({"type": "text", "text": part})
        return {"role": message.role, "content": content}

    def _open_image(self, path: Path) -> Any:
        from PIL import Image

        with Image.open(path) as image:
            image = image.convert("RGB")
        if self.max_image_side and max(image.size) > self.max_image_side:
            image.thumbnail((self.max_image_side, self.max_image_side), Image.Resampling.LANCZOS)
        return image

    def _dtype(self, torch: Any) -> Any:
        if self.dtype_name == "auto":
            return "auto"
        dtype = getattr(torch, self.dtype_name, None)
        if not isinstance(dtype, torch.dtype):
            raise MicroVQAError(f"unknown torch dtype {self.dtype_name!r}; use auto, float32, float16 or bfloat16")
        return dtype

    def _pick_device(self, torch: Any) -> Any:
        if self.device_name != "auto":
            return torch.device(self.device_name)
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
