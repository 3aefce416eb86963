"""Chat and instruction data for decoders: conversations rendered by the tokenizer's chat template, the
loss on the assistant's turns only.

- ``data.task = "chat"``: column ``data.messages_column`` holds each row's turns, a list of
  ``{"role": "system" | "user" | "assistant", "content": text}``; the last turn is the assistant's.
- ``data.task = "instruction"``: columns ``instruction``, optional ``input`` and ``output`` (Alpaca;
  GSM8K is ``instruction_column = "question"``, ``output_column = "answer"``) become two turns: the user
  says the instruction, followed by a blank line and the input when there is one, and the assistant
  answers the output.

Both are read through Hugging Face ``datasets`` (``store.hf_data``: a hub id, a local dataset folder,
or a .parquet/.jsonl/.json/.csv file), ``data.split`` for training and ``data.eval_split`` for dev
(without one, dev is the 20% of rows with the smallest sha256 of the row number, as for files);
``max_train`` / ``max_eval`` keep the lowest-ranked rows.

Rendering (``render_task``, once the tokenizer is known): for each assistant turn t, the template renders
turns [0, t) with the generation prompt (P_t) and turns [0, t] (Q_t); the text of Q_t after P_t is
that turn's answer, trained on up to and including the tokenizer's eos when the template writes it (what
follows, such as a newline, is not). Each rendering must begin with the previous one (a template that
rewrites earlier turns is refused). The pieces are tokenised one by one without added special tokens
(the template writes its own), which is also how a prompt is tokenised for generation, so a trained
answer starts at the token where generation would. Without a chat template, a chat task is refused
and an instruction task uses ``INSTRUCTION_TEMPLATE``:

    ### Instruction:
    {instruction}[\\n\\n{input}]

    ### Response:
    {output}<eos>

With ``data.metrics``, the last assistant turn's content is the reference that greedy decoding of its
prompt is scored against (``maths.nlg_metrics``).
"""

from __future__ import annotations

from dataclasses import replace

from lowrank_lab.spec import DataSpec, SpecError
from lowrank_lab.store.datasets import DataError
from lowrank_lab.store.hf_data import read_splits
from lowrank_lab.train.examples import (COMPLETION_METRICS, SPLIT_RULE, ChatExample, CompletionExample, Task,
                                        dev_indices, lowest_ranked)

ROLES = ("system", "user", "assistant")
CHAT_TASKS = ("chat", "instruction")
# Used when the tokenizer has no chat template (instruction data only); eos ends each answer.
INSTRUCTION_TEMPLATE = (
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'system' -%}{{ m['content'] + '\\n\\n' }}"
    "{%- elif m['role'] == 'user' -%}{{ '### Instruction:\\n' + m['content'] + '\\n\\n' }}"
    "{%- else -%}{{ '### Response:\\n' + m['content'] + eos_token + '\\n\\n' }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '### Response:\\n' }}{%- endif -%}")


def _text(value) -> str | None:
    """A cell's text (a number, which CSV readers make of "42", as written), or None when empty."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
        value = str(value)
    return value if isinstance(value, str) and value.strip() else None


def _turns(cell, where: str, column: str) -> tuple[tuple[str, str], ...]:
    """A messages cell as (role, content) turns; anything malformed is a DataError naming the column."""
    if not isinstance(cell, (list, tuple)) or not cell:
        raise DataError(f"{where}: column {column!r} is not a list of turns (got {type(cell).__name__})")
    turns = []
    for t, turn in enumerate(cell, 1):
        if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
            raise DataError(f"{where}: column {column!r} turn {t} is not a {{'role', 'content'}} mapping")
        if turn["role"] not in ROLES:
            raise DataError(f"{where}: column {column!r} turn {t}: role {turn['role']!r} is not one of "
                            f"{', '.join(ROLES)}")
        if _text(turn["content"]) is None:
            raise DataError(f"{where}: column {column!r} turn {t}: empty content")
        turns.append((turn["role"], _text(turn["content"])))
    if turns[-1][0] != "assistant":
        raise DataError(f"{where}: column {column!r}: the last turn is the {turns[-1][0]}'s; it must be the "
                        "assistant's (the answer the loss is on)")
    return tuple(turns)


def _chat_rows(rows: list[dict], name: str, spec: DataSpec) -> list[ChatExample]:
    column = spec.messages_column
    if rows and column not in rows[0]:
        raise DataError(f"{name}: no column {column!r} (data.messages_column); columns present: {list(rows[0])}")
    return [ChatExample(_turns(r[column], f"{name} row {n}", column), f"{name} row {n}")
            for n, r in enumerate(rows, 1)]


def _instruction_rows(rows: list[dict], name: str, spec: DataSpec) -> list[ChatExample]:
    keys = {"data.instruction_column": spec.instruction_column, "data.output_column": spec.output_column}
    for key, column in keys.items():
        if rows and column not in rows[0]:
            raise DataError(f"{name}: no column {column!r} ({key}); columns present: {list(rows[0])}")
    examples = []
    for n, r in enumerate(rows, 1):
        where = f"{name} row {n}"
        for column in keys.values():
            if _text(r[column]) is None:
                raise DataError(f"{where}: empty text in column {column!r}")
        extra = _text(r.get(spec.input_column))
        user = _text(r[spec.instruction_column]) + (f"\n\n{extra}" if extra else "")
        examples.append(ChatExample((("user", user), ("assistant", _text(r[spec.output_column]))), where))
    return examples


def load_chat_task(spec: DataSpec) -> Task:
    """``data.task`` "chat" or "instruction": a Task of ``ChatExample``s (render them with ``render_task``)."""
    if spec.path is None:
        raise SpecError(f"data.task={spec.task!r} needs data.path: a hub dataset id, a local dataset folder or "
                        "a .parquet/.jsonl/.json/.csv file")
    wanted = {"data.split": spec.split, **({"data.eval_split": spec.eval_split} if spec.eval_split else {})}
    rows, source = read_splits(spec.path, wanted, spec.config)
    read = _chat_rows if spec.task == "chat" else _instruction_rows
    name = source.get("hub") or spec.path.rstrip("/").rsplit("/", 1)[-1]
    train = read(rows[spec.split], f"{name}[{spec.split}]", spec)
    if not train:
        raise DataError(f"{name}[{spec.split}]: no rows")
    keys = [str(n) for n in range(1, len(train) + 1)]
    if spec.eval_split:
        dev = read(rows[spec.eval_split], f"{name}[{spec.eval_split}]", spec)
        split = f"train = split {spec.split!r}, dev = split {spec.eval_split!r}"
    elif len(train) < 2:
        raise DataError(f"{name}[{spec.split}]: one row; need two or more to split off a dev set (or data.eval_split)")
    else:
        picked = dev_indices(keys)
        dev = [train[i] for i in sorted(picked)]
        kept = [i for i in range(len(train)) if i not in picked]
        train, keys, split = [train[i] for i in kept], [keys[i] for i in kept], SPLIT_RULE
    if not dev:
        raise DataError(f"{name}[{spec.eval_split}]: no rows")
    kept_train = tuple(train[i] for i in lowest_ranked(keys, spec.max_train))
    kept_dev = tuple(dev[i] for i in lowest_ranked([str(n) for n in range(1, len(dev) + 1)], spec.max_eval))
    metrics = (*spec.metrics, *COMPLETION_METRICS)
    source = {"task": spec.task, "data": source, "split": split, "rows": {"train": len(train), "dev": len(dev)},
              "counts": {"train": len(kept_train), "dev": len(kept_dev)},
              "caps": {"max_train": spec.max_train, "max_eval": spec.max_eval}, "labels": None}
    return Task(spec.task, kept_train, kept_dev, 0, metrics, metrics[0], source,
                kind="generation" if spec.metrics else "completion")


def _render(tokenizer, turns: list[dict], template: str | None, where: str, generation: bool = False) -> str:
    try:
        return tokenizer.apply_chat_template(turns, chat_template=template, tokenize=False,
                                             add_generation_prompt=generation)
    except Exception as err:  # jinja's own errors (a role it refuses, a raise_exception in the template)
        raise DataError(f"{where}: the chat template fails on this conversation ({type(err).__name__}: "
                        f"{str(err).strip().splitlines()[0] if str(err).strip() else ''})") from None


def segments(tokenizer, example: ChatExample, template: str | None = None) -> tuple[tuple[str, bool], ...]:
    """The conversation as (text, trained) pieces whose concatenation is the template's rendering of it
    (module docstring); ``template`` None: the tokenizer's own."""
    turns = [{"role": r, "content": c} for r, c in example.messages]
    eos = tokenizer.eos_token
    pieces, done = [], ""
    for t, (role, _) in enumerate(example.messages):
        if role != "assistant":
            continue
        before = _render(tokenizer, turns[:t], template, example.where, generation=True)
        after = _render(tokenizer, turns[:t + 1], template, example.where)
        if not before.startswith(done) or not after.startswith(before):
            raise DataError(f"{example.where}: the chat template does not render this conversation turn by turn "
                            f"(turn {t + 1} changes the text before it), so the assistant's tokens cannot be found")
        answer = after[len(before):]
        end = answer.rfind(eos) + len(eos) if eos and eos in answer else len(answer)
        pieces += [(before[len(done):], False), (answer[:end], True)]
        done = before + answer[:end]
    whole = _render(tokenizer, turns, template, example.where)
    if not whole.startswith(done):
        raise DataError(f"{example.where}: the chat template renders the whole conversation differently from its "
                        "turns, so the assistant's tokens cannot be found")
    pieces.append((whole[len(done):], False))
    return tuple((text, trained) for text, trained in pieces if text)


def render_task(task: Task, tokenizer) -> Task:
    """A chat or instruction task's ``ChatExample``s as ``CompletionExample``s with ``segments`` (the
    module docstring); any other task as it is."""
    if task.name not in CHAT_TASKS:
        return task
    template = None
    if not getattr(tokenizer, "chat_template", None):
        if task.name == "chat":
            raise DataError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template; "
                            "data.task='chat' renders turns with it (use a chat model's tokenizer, or "
                            "data.task='instruction', which has a template of its own)")
        template = INSTRUCTION_TEMPLATE

    def convert(examples) -> tuple[CompletionExample, ...]:
        out = []
        for e in examples:
            pieces = segments(tokenizer, e, template)
            last = max(i for i, (_, trained) in enumerate(pieces) if trained)
            prompt = "".join(text for text, _ in pieces[:last])
            out.append(CompletionExample(prompt, pieces[last][0], (e.messages[-1][1].strip(),), pieces))
        return tuple(out)

    fmt = {"kind": task.name, "template": "the tokenizer's chat template" if template is None else template,
           "loss": "assistant turns only (through the tokenizer's eos where the template writes it)"}
    return replace(task, train=convert(task.train), dev=convert(task.dev), source={**task.source, "format": fmt})
