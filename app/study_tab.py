"""The Evaluation tab's study panel (raters score prepared answers, blind) and its admin panel (results).

    tab = StudyTab(available_studies(), store, output, admin_token="s3cret", chat=chat_handlers)
    with gr.Tab("Evaluation"):
        tab.rating_panel(demo)    # name or ?rater=TOKEN link -> the rater's items, one screen at a time
        ...                       # the chat-scoring part of the tab
        tab.admin_panel()         # results and exports, behind the admin token

Raters see an item's question and input media, its answers as "Answer A" / "Answer B" (pairwise, sides
drawn per rater and item) or "Answer", the rubric of its conversion type and "12 of 60"; never a system's
name, another rater's scores or any results. Answer media are served from the study's prepared/media folder,
named by content. Results and every export (study ratings and chat scores alike) answer only to the admin
token given at launch (`app.py --admin-token`, or $NEXTGPT_ADMIN_TOKEN); without one, no such endpoint exists.

API endpoints (gradio_client): /study_start (study, name, token), /study_rate (score_a, score_b, comment),
/study_skip; with an admin token: /study_results (admin_token, study), /study_links (admin_token, study,
names), /summary (admin_token), /export_csv (admin_token).
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any, Sequence
from urllib.parse import urlencode

import gradio as gr

from app.media import OutputRoot
from app.store import ScoreStore
from nextgpt.study import StudyError, bundled_studies, load_study
from nextgpt.study.assign import Screen, blocks, least_rated, screens
from nextgpt.study.prepare import Prepared, load_prepared
from nextgpt.study.results import compute, export, write_results

log = logging.getLogger(__name__)

ADMIN_TOKEN_ENV = "NEXTGPT_ADMIN_TOKEN"
SIDES = ("A", "B")
_REFUSED_PAUSE = 0.5  # seconds before a wrong admin token is answered (slows guessing)
# nano's media are 64 px: questions and answers show them larger with square pixels (added to the app's CSS)
CSS = """
.study-chat img, .study-chat video { width: 192px; max-width: 100%; height: auto; image-rendering: pixelated; }
"""


def available_studies(names: Sequence[str] | None = None) -> list[Prepared]:
    """The named studies (default: every bundled one) whose answers are all prepared; others are logged."""
    out = []
    for name in names if names is not None else bundled_studies():
        try:
            prepared = load_prepared(load_study(name))
        except StudyError as err:
            log.warning("study %s left out: %s", name, err)
            continue
        if prepared.complete:
            out.append(prepared)
        else:
            log.info("study %s: %d answers not prepared yet; offered once `python -m nextgpt study prepare "
                     "--study %s` has run", prepared.study.name, len(prepared.missing), name)
    return out


@dataclass
class Rater:
    """One browser session's rater (kept in gr.State; everything else is read back from the store)."""

    study: str
    id: int
    name: str
    block: int
    current: Screen | None = None  # the screen on display: what Save and Skip apply to


def _chat(role: str, parts: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    content = [p["text"] if p["type"] == "text" else {"path": p["path"]} for p in parts]
    return [{"role": role, "content": content or ["_(no answer)_"]}]


def _rubric(anchors: dict[str, str]) -> str:
    lines = [f"- **{score}**: {text}" for score, text in sorted(anchors.items(), key=lambda kv: int(kv[0]))]
    return "**Rubric** (scores in between for answers in between)\n\n" + "\n".join(lines) if lines else ""


class StudyTab:
    """Handlers and layout of the study and admin panels (every method called by an event is testable)."""

    def __init__(self, studies: Sequence[Prepared], store: ScoreStore, output: OutputRoot, *,
                 admin_token: str | None = None, chat: Any = None) -> None:
        self.studies = {p.study.name: p for p in studies}
        self.store = store
        self.output = output
        self.admin_token = admin_token or None
        self.chat = chat  # ChatHandlers: its summary / export of chat scores join the admin panel
        self.allowed_paths = [str(p.study.folder) for p in studies]  # input and answer media are served from here

    # ---- rating ------------------------------------------------------------------------------------
    def start(self, study: Any, name: Any, token: Any, rater: Rater | None) -> tuple[Any, ...]:
        """Sign in by name (a new name starts a new rater) or by link token -> the rater's next screen."""
        prepared = self.studies.get(str(study or ""))
        if prepared is None:
            return self.view(rater, "Choose a study first." if self.studies else "No study is prepared.")
        try:
            row = self.store.join_study(prepared.study.name, least_rated, len(blocks(prepared.study)),
                                        name=str(name or ""), token=str(token or "") or None)
        except ValueError as err:
            return self.view(None, f"Not started: {err}.")
        rater = Rater(prepared.study.name, row["id"], row["name"], row["block"])
        return self.view(rater, f"Signed in as **{rater.name}**.")

    def rate(self, rater: Rater | None, score_a: Any, score_b: Any, comment: Any) -> tuple[Any, ...]:
        """Save the scores of the screen on display, then show the next one."""
        if rater is None or rater.current is None:
            return self.view(rater, "Sign in first.")
        screen = rater.current
        try:
            values = [int(float(v)) for v in (score_a, score_b)[: len(screen.answers)]]
            sides = SIDES if len(screen.answers) == 2 else ("",)
            saved = self.store.add_study_ratings(rater.study, rater.id, screen.item,
                                                 list(zip(screen.answers, sides, values)), str(comment or ""))
        except (TypeError, ValueError) as err:
            return self.view(rater, f"Not saved: {err}.", keep=True)
        return self.view(rater, "Saved." if saved else "Already saved earlier.")

    def skip(self, rater: Rater | None) -> tuple[Any, ...]:
        """Record the screen on display as skipped, then show the next one."""
        if rater is None or rater.current is None:
            return self.view(rater, "Sign in first.")
        screen = rater.current
        sides = SIDES if len(screen.answers) == 2 else ("",)
        self.store.add_study_ratings(rater.study, rater.id, screen.item,
                                     [(key, side, None) for key, side in zip(screen.answers, sides)])
        return self.view(rater, "Skipped.")

    def view(self, rater: Rater | None, status: str = "", *, keep: bool = False) -> tuple[Any, ...]:
        """(rater, progress, question, answer A, answer B, rubric, score A, score B, comment, status): the
        rater's next unrated screen, or an empty panel. `keep`: leave the sliders and comment as they are."""
        blank = (gr.Chatbot(value=[], visible=False),) * 3
        if rater is None:
            return (None, "", *blank, "", gr.Slider(visible=False), gr.Slider(visible=False), gr.Textbox(visible=False),
                    status)
        prepared = self.studies[rater.study]
        study = prepared.study
        mine = screens(study, rater.id, rater.block)
        done = self.store.study_done(study.name, rater.id)
        left = [s for s in mine if not all((s.item, key) in done for key in s.answers)]
        finished = len(mine) - len(left)
        if not left:
            rater.current = None
            return (rater, f"**{finished} of {len(mine)}** done: all of your items are rated. Thank you!", *blank,
                    "", gr.Slider(visible=False), gr.Slider(visible=False), gr.Textbox(visible=False), status)
        screen = rater.current = left[0]
        item = study.item(screen.item)
        pairwise = len(screen.answers) == 2
        question = _chat("user", [*({"type": p["type"], "path": str(study.folder / p["path"])} for p in item.media),
                                  {"type": "text", "text": item.prompt}])
        answers = [prepared.answers[(item.id, key)] for key in screen.answers]
        progress = f"**{finished} of {len(mine)}** done · {study.title}"
        if finished == 0 and study.instructions:
            progress += f"\n\n{study.instructions}"
        reference = f"\n\n**Reference:** {item.reference}" if item.reference else ""
        score = {} if keep else {"value": 5}
        return (
            rater, progress,
            gr.Chatbot(value=question, visible=True),
            gr.Chatbot(value=_chat("assistant", answers[0]), visible=True, label="Answer A" if pairwise else "Answer"),
            gr.Chatbot(value=_chat("assistant", answers[1]) if pairwise else [], visible=pairwise, label="Answer B"),
            _rubric(study.rubric(item.conversion)) + reference,
            gr.Slider(visible=True, label="Score for answer A" if pairwise else "Score", **score),
            gr.Slider(visible=pairwise, label="Score for answer B", **score),
            gr.Textbox(visible=True, **({} if keep else {"value": ""})),
            status,
        )

    def on_load(self, rater: Rater | None, request: gr.Request) -> tuple[Any, ...]:
        """A page opened with ?rater=TOKEN (and ?study=NAME) signs that rater in; else an empty panel."""
        params = dict(request.query_params) if request is not None else {}
        token = params.get("rater", "")
        study = params.get("study") or (next(iter(self.studies)) if len(self.studies) == 1 else None)
        if token and study:
            return (gr.Dropdown(value=study), *self.start(study, "", token, None))
        return (gr.Dropdown(value=study), *self.view(rater))

    # ---- admin -------------------------------------------------------------------------------------
    def _check(self, token: Any) -> None:
        if self.admin_token is None or not hmac.compare_digest(str(token or "").encode(), self.admin_token.encode()):
            time.sleep(_REFUSED_PAUSE)
            raise gr.Error("Not the admin token: results are shown to the study's admin only.")

    def results(self, token: Any, study: Any) -> tuple[Any, ...]:
        """(Markdown, JSON summary, plot PNGs, [ratings.csv, ratings.jsonl]) of a study, for the admin."""
        self._check(token)
        prepared = self.studies.get(str(study or ""))
        if prepared is None:
            raise gr.Error("No such study.")
        ratings = self.store.study_ratings(prepared.study.name)
        results = compute(prepared.study, ratings)
        folder = self.output.export_path(f"study-{prepared.study.name}").with_suffix("")
        paths = write_results(results, folder)
        files = export(prepared.study, ratings, folder)
        return results.markdown(), results.summary(), paths["plots"], [files["csv"], files["jsonl"]]

    def links(self, token: Any, study: Any, names: Any, request: gr.Request | None = None) -> str:
        """New per-rater sign-in links for the names (comma or line separated), as Markdown."""
        self._check(token)
        prepared = self.studies.get(str(study or ""))
        if prepared is None:
            raise gr.Error("No such study.")
        base = ""
        if request is not None and request.headers.get("origin"):
            base = request.headers["origin"].rstrip("/") + "/"
        lines = []
        for name in [n.strip() for n in str(names or "").replace(",", "\n").splitlines() if n.strip()]:
            rater_token = secrets.token_urlsafe(18)
            try:
                self.store.add_study_rater(prepared.study.name, name, rater_token)
            except ValueError as err:
                lines.append(f"- {name}: not created ({err})")
                continue
            lines.append(f"- {name}: `{base}?{urlencode({'study': prepared.study.name, 'rater': rater_token})}`")
        return "\n".join(lines) or "Type one or more names."

    def chat_summary(self, token: Any) -> tuple[Any, Any]:
        self._check(token)
        return self.chat.summary()

    def chat_export(self, token: Any) -> str:
        self._check(token)
        return self.chat.export()

    # ---- layout ------------------------------------------------------------------------------------
    def rating_panel(self, demo: gr.Blocks) -> None:
        """The study section: choose a study, sign in, rate. Call inside `demo`'s Evaluation tab."""
        if not self.studies:
            gr.Markdown("No evaluation study is prepared on this server (`python -m nextgpt study prepare`).")
            return
        gr.Markdown("### Evaluation study\nRate prepared answers, blind: type your name (or open the link you were "
                    "given), then score each answer from 1 to 10. You can stop and come back with the same name.")
        rater = gr.State(None)
        with gr.Row():
            study = gr.Dropdown([(p.study.title, name) for name, p in self.studies.items()], label="Study",
                                elem_id="study")
            name = gr.Textbox(label="Your name", placeholder="rater name", elem_id="study-rater")
            token = gr.Textbox(visible=False)
            start = gr.Button("Start", variant="primary", elem_id="study-start")
        progress = gr.Markdown(elem_id="study-progress")
        shown = {"visible": False, "buttons": [], "feedback_options": None, "elem_classes": "study-chat"}
        question = gr.Chatbot(label="Question", height=220, elem_id="study-question", **shown)
        with gr.Row():
            answer_a = gr.Chatbot(label="Answer A", height=300, elem_id="study-answer-a", **shown)
            answer_b = gr.Chatbot(label="Answer B", height=300, elem_id="study-answer-b", **shown)
        rubric = gr.Markdown(elem_id="study-rubric")
        with gr.Row():
            score_a = gr.Slider(1, 10, value=5, step=1, label="Score for answer A", visible=False,
                                elem_id="study-score-a")
            score_b = gr.Slider(1, 10, value=5, step=1, label="Score for answer B", visible=False,
                                elem_id="study-score-b")
        comment = gr.Textbox(label="Comment (optional)", lines=1, visible=False, elem_id="study-comment")
        with gr.Row():
            save = gr.Button("Save and next", variant="primary", elem_id="study-save")
            skip = gr.Button("Skip", elem_id="study-skip")
        status = gr.Markdown(elem_id="study-status")
        view = [rater, progress, question, answer_a, answer_b, rubric, score_a, score_b, comment, status]
        start.click(self.start, [study, name, token, rater], view, api_name="study_start")
        name.submit(self.start, [study, name, token, rater], view, api_visibility="private")
        save.click(self.rate, [rater, score_a, score_b, comment], view, api_name="study_rate")
        skip.click(self.skip, [rater], view, api_name="study_skip")
        demo.load(self.on_load, [rater], [study, *view], api_visibility="private")
        demo.nextgpt_allowed_paths = [*getattr(demo, "nextgpt_allowed_paths", []), *self.allowed_paths]

    def admin_panel(self) -> None:
        """Results of the studies and the chat scores, behind the admin token. Call inside the Evaluation tab."""
        with gr.Accordion("Results (admin)", open=False, elem_id="admin"):
            if self.admin_token is None:
                gr.Markdown("Results and exports are shown to the admin only: start the app with "
                            f"`--admin-token` (or ${ADMIN_TOKEN_ENV}) to read them here.")
                return
            token = gr.Textbox(label="Admin token", type="password", elem_id="admin-token")
            if self.studies:
                with gr.Row():
                    study = gr.Dropdown([(p.study.title, n) for n, p in self.studies.items()],
                                        value=next(iter(self.studies)), label="Study", elem_id="admin-study")
                    show = gr.Button("Show study results", variant="primary", elem_id="admin-results")
                table = gr.Markdown(elem_id="admin-table")
                summary = gr.JSON(label="Summary", visible=False)
                plots = gr.Gallery(label="Plots", columns=2, height=360, elem_id="admin-plots")
                files = gr.File(label="Ratings (CSV, JSONL)", file_count="multiple", elem_id="admin-files")
                show.click(self.results, [token, study], [table, summary, plots, files], api_name="study_results")
                with gr.Row():
                    names = gr.Textbox(label="Rater links for (names, comma separated)", elem_id="admin-names")
                    make = gr.Button("Make links", elem_id="admin-links")
                links = gr.Markdown(elem_id="admin-links-out")
                make.click(self.links, [token, study, names], [links], api_name="study_links")
            if self.chat is not None:
                gr.Markdown(f"#### Chat scores of model version `{self.chat.version}`: mean and 95% interval per "
                            "conversion type")
                refresh = gr.Button("Show chat scores", elem_id="refresh-summary")
                plot = gr.BarPlot(x="category", y="mean", y_lim=[0, 10], label="Mean score", elem_id="summary-plot")
                frame = gr.Dataframe(label="Summary", interactive=False, elem_id="summary-table")
                export_btn = gr.Button("Export all chat scores as CSV", elem_id="export")
                export_file = gr.File(label="CSV", interactive=False, elem_id="export-file")
                refresh.click(self.chat_summary, [token], [plot, frame], api_name="summary")
                export_btn.click(self.chat_export, [token], [export_file], api_name="export_csv")
