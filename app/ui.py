"""The gradio layout: a Chat tab and an Evaluation tab around one model.

    demo = build_demo(NextGPT.from_preset("nano"))       # any object with stream / can_encode / can_generate / cfg
    launch(demo, host="127.0.0.1", port=7860)

Named API endpoints (gradio_client): /chat, /regenerate, /undo, /clear, /example, /score, /info, the
study endpoints and, with an admin token, /summary and /export_csv (app/study_tab.py). The conversation
lives in a per-session gr.State, so an API client keeps its history between calls on one `Client`. /ask is one
stateless question and answer (app/tool.py); with `launch(..., mcp=True)` it is also the MCP server's one tool,
`ask`, at /gradio_api/mcp/.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import gradio as gr

from app.examples import EXAMPLES, EXAMPLES_DIR
from app.handlers import SETTINGS, ChatHandlers
from app.media import OutputRoot
from app.store import ScoreStore
from app.tool import make_ask
from app.study_tab import CSS as STUDY_CSS
from app.study_tab import StudyTab, available_studies

# generated media are small (64 px nano images, 1 s clips): shown large with square pixels, videos looping;
# Stop/Regenerate/Undo/Clear compact enough to share one row on a phone
CSS = """
#chat .image-frame img, #chat img[src*="out-"] {
  width: 256px; max-width: 100%; height: auto; object-fit: contain; image-rendering: pixelated;
}
#chat :fullscreen .image-frame { width: 100%; }
#chat :fullscreen img {
  width: 100%; height: 100vh; max-width: none; max-height: none; object-fit: contain; image-rendering: pixelated;
}
#chat video { width: 320px; max-width: 100%; height: auto; image-rendering: pixelated; }
#chat .wrap:not(:hover) > .controls { opacity: 0; }
#chat .examples { grid-template-columns: repeat(auto-fit, minmax(180px, 1fr)); gap: 8px; padding: 8px; }
#chat .example { padding: 8px; }
#chat .example-content { flex-direction: row; align-items: center; gap: 10px; }
#chat .example-text-content { margin-top: 0; }
#chat .example-image-container { width: 48px; height: 48px; flex-shrink: 0; }
#chat .example-image-container img { object-fit: contain; image-rendering: pixelated; }
@media (max-width: 640px) {
  #chat .examples { grid-template-columns: 1fr 1fr; padding: 4px; gap: 6px; }
  #chat .example-image-container { width: 36px; height: 36px; }
  #chat .example-text, #chat .placeholder p { font-size: var(--text-sm); }
  #chat .placeholder { padding: 0 4px; }
  #header h2 { font-size: var(--text-xl); }
}
#actions { flex-wrap: nowrap; gap: 6px; }
#actions button { flex: 0 1 auto; min-width: 0; }
#header h2 { margin: 0; }
#chat .placeholder { text-align: center; padding: 0 10%; }
"""
# generated videos loop, muted (so that browsers let them play by themselves); the textbox takes the focus on
# wide screens only (on a phone that would scroll the page and open the keyboard)
JS = """
() => {
  const ready = (video) => {
    if (video.dataset.nextgpt) return;
    video.dataset.nextgpt = "1";
    video.muted = true; video.loop = true; video.autoplay = true; video.playsInline = true;
    video.play().catch(() => {});
  };
  new MutationObserver(() => document.querySelectorAll("#chat video").forEach(ready))
    .observe(document.body, {childList: true, subtree: true});
  if (window.matchMedia("(min-width: 768px)").matches) {
    const focus = () => {
      const box = document.querySelector("#message textarea");
      if (box) box.focus({preventScroll: true}); else setTimeout(focus, 200);
    };
    focus();
  }
}
"""
MCP_TOOLS = ("/ask",)  # the endpoints an MCP client is offered: the others keep a conversation in gr.State
MAX_UPLOAD = "50mb"
MAX_QUEUE = 64  # requests waiting for the model beyond this are refused at once ("Queue is full")
_MODEL_EVENT = {"concurrency_id": "model", "concurrency_limit": 1}  # one model: one generation at a time


def _named(fn: Callable[..., Iterator[Any]], *leading: str) -> Callable[..., Iterator[Any]]:
    """`fn(*leading, *settings)` with the settings as named, defaulted parameters (what API clients see)."""

    @functools.wraps(fn)
    def wrapper(*args: Any) -> Iterator[Any]:
        yield from fn(*args)

    params = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for name in leading]
    params += [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=value)
               for name, value in SETTINGS]
    wrapper.__signature__ = inspect.Signature(params)
    return wrapper


def _settings_panel() -> list[gr.components.Component]:
    """The sliders, in the order of handlers.SETTINGS."""
    defaults = dict(SETTINGS)
    with gr.Accordion("Settings", open=False):
        with gr.Row():
            temperature = gr.Slider(0, 2, value=defaults["temperature"], step=0.05, label="Temperature (0 = greedy)")
            top_p = gr.Slider(0.05, 1, value=defaults["top_p"], step=0.05, label="Top-p")
            max_new = gr.Slider(1, 1024, value=defaults["max_new_tokens"], step=1, label="Max new tokens")
            seed = gr.Number(value=defaults["seed"], precision=0, minimum=0, label="Seed")
        with gr.Row():
            steps = gr.Slider(0, 200, value=defaults["num_inference_steps"], step=1,
                              label="Diffusion steps (0 = preset default)")
            guidance = gr.Slider(0, 20, value=defaults["guidance_scale"], step=0.5,
                                 label="Guidance scale (0 = preset default)")
            frames = gr.Slider(0, 64, value=defaults["num_frames"], step=1, label="Video frames (0 = preset default)")
            seconds = gr.Slider(0, 30, value=defaults["audio_seconds"], step=0.5,
                                label="Audio seconds (0 = preset default)")
    return [temperature, top_p, max_new, steps, guidance, frames, seconds, seed]


def build_demo(model: Any, *, output: OutputRoot | None = None, store: ScoreStore | None = None, note: str = "",
               version: str | None = None, examples_dir: Path = EXAMPLES_DIR, studies: Sequence[Any] | None = None,
               admin_token: str | None = None) -> gr.Blocks:
    """The app around `model` (a NextGPT, or anything with its stream / can_encode / can_generate / cfg).

    output: where session media go (default: a fresh temp folder); store: the scores database (default:
    $NEXTGPT_SCORES_DB or the cache folder); note: shown in bold under the capabilities (e.g. that the weights
    are random); version: the model version recorded with scores (default: a hash of the config and parts);
    studies: prepared evaluation studies (default: every bundled one that is prepared); admin_token: unlocks
    results and exports (without it they are not served at all).
    """
    output = output or OutputRoot()
    store = store or ScoreStore()
    h = ChatHandlers(model, output, store, note=note, version=version, examples_dir=examples_dir)
    ttl = int(output.ttl_seconds)
    study_tab = StudyTab(available_studies() if studies is None else studies, store, output,
                         admin_token=admin_token, chat=h)

    with gr.Blocks(title="NExT-GPT", delete_cache=(max(60, ttl // 4), ttl)) as demo:
        session = gr.State(None, delete_callback=lambda s: output.remove(s.id) if s is not None else None)
        gr.Markdown("## NExT-GPT · any-to-any chat", elem_id="header")
        gr.Markdown(h.headline, elem_id="model-info")

        with gr.Tab("Chat", id="chat"):
            chat_box = gr.Chatbot(
                label="Conversation", show_label=False, height="min(560px, 62vh)", elem_id="chat",
                feedback_options=None, placeholder=h.welcome or None,
                examples=[{"display_text": e.title, "icon": str(e.thumbnail_path)} for e in EXAMPLES],
            )
            textbox = gr.MultimodalTextbox(
                sources=["upload", "microphone"], file_count="multiple", file_types=["image", "audio", "video"],
                placeholder="Ask, or upload images / audio / video and ask about them",
                show_label=False, elem_id="message", autofocus=False,
            )
            with gr.Row(elem_id="actions"):
                stop = gr.Button("Stop", variant="stop", size="sm", visible=False, elem_id="stop")
                regen = gr.Button("Regenerate", size="sm", elem_id="regenerate")
                undo = gr.Button("Undo", size="sm", elem_id="undo")
                clear = gr.Button("Clear", size="sm", elem_id="clear")
            settings = _settings_panel()
            with gr.Accordion("About", open=False, elem_id="about"):
                info = gr.Markdown(h.info, elem_id="about-info")

        with gr.Tab("Evaluation", id="evaluation") as eval_tab:
            study_tab.rating_panel(demo)
            gr.Markdown("### Score this chat\nScore the assistant's turns of **this** conversation from 1 (useless) to 10 (perfect) "
                        "for what was asked; the conversion type is derived from the turn.")
            with gr.Row():
                evaluator = gr.Textbox(label="Evaluator", placeholder="your name", elem_id="evaluator")
                turn = gr.Dropdown(choices=[], label="Assistant turn", elem_id="turn")
                score = gr.Slider(1, 10, value=5, step=1, label="Score", elem_id="score")
            comment = gr.Textbox(label="Comment (optional)", lines=2, elem_id="comment")
            save = gr.Button("Save score", variant="primary", elem_id="save-score")
            status = gr.Markdown(elem_id="score-status")
            study_tab.admin_panel()

        # ---- events: chat ----------------------------------------------------------------------------
        def refresh_turns(s: Any) -> Any:
            choices = h.turn_choices(s)
            return gr.Dropdown(choices=choices, value=choices[-1][1] if choices else None)

        chat, regenerate = _named(h.chat, "message", "session"), _named(h.regenerate, "session")
        run_example = _named(h.run_example, "example", "session")

        def selected_example(evt: gr.SelectData, session: Any, *values: Any) -> Iterator[Any]:
            yield from h.run_example(evt.index, session, *values)

        # Stop shows while a model event runs (and stays while messages wait in the inbox); registered first:
        # the page runs the listeners of one trigger in order, each to its end
        for trigger in (textbox.submit, regen.click, chat_box.example_select):
            trigger(lambda: gr.Button(visible=True), None, [stop], queue=False, api_visibility="private")
        # a message goes to the session's inbox at once (also while a reply is generating); the answering
        # event is deferred, not dropped, while one runs ("always_last": gradio's default "once" skips a
        # trigger while the same event is pending, which lost messages), and answers the inbox in order
        submitted = textbox.submit(h.enqueue, [textbox, session], [chat_box, session, textbox], queue=False,
                                   api_visibility="private")
        answer_inbox = _named(h.answer_inbox, "session")
        runs = [
            submitted.then(answer_inbox, [session, *settings], [chat_box, session], api_name="chat_ui",
                           api_visibility="private", trigger_mode="always_last", **_MODEL_EVENT),
            regen.click(regenerate, [session, *settings], [chat_box, session], api_name="regenerate",
                        **_MODEL_EVENT),
            chat_box.example_select(selected_example, [session, *settings], [chat_box, session],
                                    api_visibility="private", **_MODEL_EVENT),
        ]
        for event in runs:
            event.then(lambda s: gr.Button(visible=bool(s and s.inbox)), [session], [stop], queue=False,
                       api_visibility="private")
        # API endpoints: /chat takes the message itself (API clients have no inbox), /example an index
        api_chat, api_example, api_index = gr.Button(visible=False), gr.Button(visible=False), gr.Number(visible=False)
        runs.append(api_chat.click(chat, [textbox, session, *settings], [chat_box, session], api_name="chat",
                                   **_MODEL_EVENT))
        runs.append(api_example.click(run_example, [api_index, session, *settings], [chat_box, session],
                                      api_name="example", **_MODEL_EVENT))
        # /ask: one question and its answer, no history (the MCP tool); files as paths, None where absent
        ask_in = [gr.Textbox(visible=False, label="text")]
        ask_in += [gr.File(visible=False, label=kind) for kind in ("image", "audio", "video")]
        ask_out = [gr.Textbox(visible=False, label="reply")]
        ask_out += [gr.File(visible=False, label=f"generated {kind}") for kind in ("image", "audio", "video")]
        gr.Button(visible=False).click(make_ask(h), ask_in, ask_out, api_name="ask", **_MODEL_EVENT)
        runs += [
            undo.click(h.undo, [session], [chat_box, session], api_name="undo"),
            clear.click(h.clear, [session], [chat_box, session], api_name="clear"),
            chat_box.clear(h.clear, [session], [chat_box, session], api_name="clear_ui", api_visibility="private"),
        ]
        stop.click(lambda: gr.Button(visible=False), None, [stop], cancels=runs[:5], queue=False,
                   api_visibility="private")
        for event in runs:
            event.then(refresh_turns, [session], [turn], api_visibility="private")
        # after Stop the session may hold a half-finished turn and waiting messages: show them as stopped
        stop.click(h.stop, [session], [chat_box], api_visibility="private")

        # ---- events: evaluation ----------------------------------------------------------------------
        eval_tab.select(refresh_turns, [session], [turn], api_visibility="private")
        save.click(h.score, [evaluator, turn, score, comment, session], [status], api_name="score_ui",
                   api_visibility="private")
        api_turn = gr.Number(visible=False, precision=0)
        api_score = gr.Button(visible=False)
        api_score.click(h.score, [evaluator, api_turn, score, comment, session], [status], api_name="score")
        gr.Button(visible=False).click(lambda: h.info, None, [info], api_name="info")

    demo.nextgpt_output = output  # read by `launch` for allowed_paths
    return demo


def launch(demo: gr.Blocks, *, host: str = "127.0.0.1", port: int | None = None, share: bool = False,
           max_queue: int = MAX_QUEUE, mcp: bool = False, **kwargs: Any) -> Any:
    """demo.launch with the output root and the studies' folders as the only extra folders files may be served
    from, a bounded queue and the app's CSS and JS (media sizes, looping videos, focus).

    mcp: also serve the MCP server (streamable HTTP at /gradio_api/mcp/, SSE at /gradio_api/mcp/sse) with the
    tools of MCP_TOOLS only."""
    output: OutputRoot = demo.nextgpt_output
    kwargs.setdefault("css", CSS + STUDY_CSS)
    kwargs.setdefault("js", JS)
    prevent_thread_lock = kwargs.pop("prevent_thread_lock", False)
    if mcp:
        # gradio warns that tools with a gr.State input forget it between calls: those tools are removed below
        warnings.filterwarnings("ignore", message="This MCP server includes a tool that has a gr.State input")
    result = demo.queue(default_concurrency_limit=1, max_size=max_queue).launch(
        server_name=host, server_port=port, share=share,
        allowed_paths=[str(output.root), *getattr(demo, "nextgpt_allowed_paths", [])],
        max_file_size=MAX_UPLOAD, mcp_server=mcp, prevent_thread_lock=prevent_thread_lock or mcp, **kwargs,
    )
    if mcp:
        _shape_mcp_server(demo.mcp_server_obj)
        if not prevent_thread_lock:
            demo.block_thread()
    return result


def _shape_mcp_server(server: Any) -> None:
    """Shape gradio's MCP server (created by launch, shaped a moment after) for MCP_TOOLS.

    1. offer the MCP_TOOLS alone (gradio offers every named endpoint);
    2. one content item per output, none for an empty one: gradio 6.31 turns all the outputs of a call without
       a progress token into one text item (the repr of the list) and an empty output into the text "None"."""
    server.tool_to_endpoint = {tool: endpoint for tool, endpoint in server.tool_to_endpoint.items()
                               if endpoint in MCP_TOOLS}
    postprocess = server.postprocess_output_data

    def per_output(data: Any, root_url: str) -> Any:
        if len(data) == 1 and isinstance(data[0], (list, tuple)):
            data = list(data[0])
        return postprocess([item for item in data if item is not None], root_url)

    server.postprocess_output_data = per_output
