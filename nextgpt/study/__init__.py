"""Human evaluation studies: a fixed question set answered once by each system, rated 1-10 by many raters,
blind and in random order, with agreement statistics for the admin.

    python -m nextgpt study prepare --study default     # every system's answers, kept with the study
    python app.py --admin-token SECRET                  # raters use the Evaluation tab; the admin sees results
    python -m nextgpt study results --study default     # the same results from the command line

spec     - the study: question set (JSONL), systems, rubrics per conversion type
default  - the bundled default study (python -m nextgpt.study.default writes it)
prepare  - generating and loading the answers (media files named by content + one JSON per answer)
assign   - blocks of items per rater, per-rater order and A/B sides (seeded)
results  - means and intervals, paired differences, Krippendorff's alpha, ICC(2,k), plots, CSV / JSONL export
store    - the raters and their ratings in SQLite (the file the app also keeps its chat scores in)
The rating UI is app/study_tab.py.
"""

from nextgpt.study.spec import Item, Study, StudyError, System, bundled_studies, load_study

__all__ = ["Item", "Study", "StudyError", "System", "bundled_studies", "load_study"]
