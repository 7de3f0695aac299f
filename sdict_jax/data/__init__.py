"""Input data: sources of raw example dicts, tokenizers, and the Grain pipeline.

A source (e.g. `shapes.ShapesSource`) yields raw example dicts with the keys `image`,
`captions`, `questions`, `answers`, `answer_types`, `boxes`, `refexps`, `id` (tasks a
source lacks are empty or absent; `question_kinds`, what each question tests, is
optional and gives per-kind VQA accuracy in evaluation); `pipeline.make_dataset`
turns them into model batches.
"""
