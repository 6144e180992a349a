"""The demo's domain: job postings, generated resumes, two classifier versions, the ranking.

Everything here is deterministic and free of I/O, so the in-process demo
processor, the watcher processes and the example HTTP handler
(``examples/resume_handler.py``) all classify and rank the same way.

A resume is plain text the generator writes::

    Ada Quinn
    ada.quinn@example.com
    Experience: 7 years
    Skills: Python, SQL, Docker
    Summary: Led a team building Kafka pipelines.

The classifier "extracts" (years of experience, skills found anywhere in the
text) and "classifies" (a score against the posting, and a class). Version 1
reads the years only as digits; one generated resume writes them in words
("twelve years"), which v1 rejects with :class:`~feedwatch.PermanentError`.
Version 2 is the fix: it also reads number words. Both agree on every other
resume.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from feedwatch.errors import PermanentError

#: The id of the fan-in item of every posting (at gate 1).
RANK_ITEM = "rank"
#: How many candidates the rank step keeps.
TOP = 10
CLASSIFIERS = ("v1", "v2")


@dataclass(frozen=True)
class Posting:
    """A job posting: one partition of the demo feed."""

    id: str
    title: str
    requires: tuple[str, ...]
    nice: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "requires": list(self.requires),
            "nice": list(self.nice),
        }


CATALOG = (
    Posting("backend-engineer", "Backend engineer",
            ("python", "sql", "postgresql", "kafka"), ("kubernetes", "redis", "go")),
    Posting("data-engineer", "Data engineer",
            ("python", "spark", "airflow", "sql"), ("dbt", "kafka", "scala")),
    Posting("frontend-engineer", "Frontend engineer",
            ("typescript", "react", "css", "accessibility"), ("graphql", "figma", "node")),
    Posting("site-reliability-engineer", "Site reliability engineer",
            ("kubernetes", "terraform", "prometheus", "linux"), ("go", "python", "postgresql")),
    Posting("ml-engineer", "Machine learning engineer",
            ("python", "pytorch", "statistics", "sql"), ("spark", "kubernetes", "mlops")),
    Posting("security-engineer", "Security engineer",
            ("linux", "networking", "python", "cryptography"), ("go", "kubernetes", "terraform")),
)  # fmt: skip

#: Every skill the classifier recognises (how it is written in resumes).
SKILLS = {
    "python": "Python", "sql": "SQL", "postgresql": "PostgreSQL", "kafka": "Kafka",
    "kubernetes": "Kubernetes", "redis": "Redis", "go": "Go", "spark": "Spark",
    "airflow": "Airflow", "dbt": "dbt", "scala": "Scala", "typescript": "TypeScript",
    "react": "React", "css": "CSS", "accessibility": "accessibility", "graphql": "GraphQL",
    "figma": "Figma", "node": "Node", "terraform": "Terraform", "prometheus": "Prometheus",
    "linux": "Linux", "pytorch": "PyTorch", "statistics": "statistics", "mlops": "MLOps",
    "networking": "networking", "cryptography": "cryptography", "java": "Java",
    "excel": "Excel", "docker": "Docker", "rust": "Rust",
}  # fmt: skip

FIRST = (
    "Ada", "Alan", "Barbara", "Bjarne", "Claude", "Dennis", "Donald", "Edsger", "Frances",
    "Grace", "Guido", "Hedy", "Ivan", "Joan", "John", "Ken", "Leslie", "Linus", "Margaret",
    "Niklaus", "Radia", "Rob", "Shafi", "Sophie", "Tim", "Vint", "Whitfield", "Yukihiro",
)  # fmt: skip
LAST = (
    "Quinn", "Moreau", "Okafor", "Lindqvist", "Tanaka", "Novak", "Haddad", "Fischer",
    "Costa", "Murphy", "Kowalski", "Iyer", "Nakamura", "Silva", "Berg", "Dubois", "Rossi",
    "Yilmaz", "Andersen", "Kim", "Petrov", "Garcia", "Mensah", "Walsh",
)  # fmt: skip
SUMMARIES = (
    "Built {a} services used by millions.",
    "Led a team building {a} pipelines.",
    "Maintained {a} and {b} in production.",
    "Mentored juniors; wrote {a} tooling.",
    "Migrated a monolith to {a} with {b}.",
    "Shipped {a} features every week.",
)

NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20,
}  # fmt: skip

_EXPERIENCE_LINE = re.compile(r"^Experience:(.*)$", re.MULTILINE)
_DIGITS = re.compile(r"^\s*(\d+)\s+years?\s*$")
_WORDS = re.compile(r"^\s*([a-z]+)\s+years?\s*$", re.IGNORECASE)
_SKILL_PATTERNS = {key: re.compile(rf"\b{re.escape(key)}\b", re.IGNORECASE) for key in SKILLS}


def postings(count: int) -> list[Posting]:
    """``count`` postings from the catalog; past its end, numbered copies."""
    chosen = []
    for n in range(count):
        base = CATALOG[n % len(CATALOG)]
        round_ = n // len(CATALOG)
        if round_:
            base = Posting(
                f"{base.id}-{round_ + 1}", f"{base.title} ({round_ + 1})", base.requires, base.nice
            )
        chosen.append(base)
    return chosen


def failing_posting(count: int) -> int:
    """The index of the posting that holds the resume classifier v1 cannot read."""
    return 1 % count


def resume_id(n: int) -> str:
    return f"resume-{n:04d}"


def generate(posting: Posting, count: int, seed: int, *, with_poison: bool) -> dict[str, dict[str, Any]]:
    """``count`` resumes for ``posting`` as ``{item id: item data}``; the same for the same seed."""
    rng = random.Random(f"{seed}:{posting.id}")  # noqa: S311 - demo data, not secrets
    others = ("java", "excel", "docker", "rust", "sql", "linux")
    pool = [*posting.requires, *posting.nice, *others]
    # Early in the posting, so the fix is deployed while the other postings still run.
    poison = rng.randrange(max(1, count // 3)) if with_poison else -1
    resumes: dict[str, dict[str, Any]] = {}
    for n in range(1, count + 1):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        years = rng.randint(0, 20)
        skills = sorted(set(rng.sample(pool, rng.randint(2, 6))), key=pool.index)
        extra = rng.sample(sorted(SKILLS), 2)
        summary = rng.choice(SUMMARIES).format(a=SKILLS[extra[0]], b=SKILLS[extra[1]])
        if n - 1 == poison:
            # A strong candidate whose OCR wrote the years in words: v1 cannot read it.
            first, last, years_text = "Grace", "Hopper", "twelve years"
            skills = list(posting.requires + posting.nice)
            summary = f"Led the team that built the first {SKILLS[posting.requires[0]]} compiler."
        else:
            years_text = f"{years} year" + ("" if years == 1 else "s")
        text = "\n".join([
            f"{first} {last}",
            f"{first.lower()}.{last.lower()}{n}@example.com",
            f"Experience: {years_text}",
            "Skills: " + ", ".join(SKILLS[s] for s in skills),
            f"Summary: {summary}",
        ])  # fmt: skip
        resumes[resume_id(n)] = {"posting": posting.as_json(), "resume": text}
    return resumes


def rank_item(posting: Posting) -> dict[str, dict[str, Any]]:
    """The fan-in item of a posting, enqueued with it at gate 1."""
    return {RANK_ITEM: {"posting": posting.as_json(), "top": TOP}}


# -- classifying ------------------------------------------------------------------


def read_years(text: str, classifier: str) -> int:
    """Years of experience from the resume's ``Experience:`` line."""
    match = _EXPERIENCE_LINE.search(text)
    if match is None:
        raise PermanentError(f"classifier {classifier}: the resume has no Experience line")
    value = match.group(1)
    digits = _DIGITS.match(value)
    if digits:
        return int(digits.group(1))
    if classifier != "v1":
        words = _WORDS.match(value)
        if words and words.group(1).lower() in NUMBER_WORDS:
            return NUMBER_WORDS[words.group(1).lower()]
    raise PermanentError(
        f"classifier {classifier} cannot read the experience line {('Experience:' + value)!r}"
    )


def classify(data: Any, classifier: str) -> dict[str, Any]:
    """Extract and classify one resume item's data; raise ``PermanentError`` if it cannot."""
    if classifier not in CLASSIFIERS:
        raise PermanentError(f"unknown classifier {classifier!r}; known: {', '.join(CLASSIFIERS)}")
    if not isinstance(data, dict) or not isinstance(data.get("resume"), str):
        raise PermanentError("a resume item's data must be an object with a 'resume' text")
    posting = data.get("posting") or {}
    text: str = data["resume"]
    name = text.splitlines()[0].strip() if text.strip() else "?"
    years = read_years(text, classifier)
    found = [key for key, pattern in _SKILL_PATTERNS.items() if pattern.search(text)]
    requires = [s for s in posting.get("requires", []) if s in found]
    nice = [s for s in posting.get("nice", []) if s in found]
    led = bool(re.search(r"\b(led|mentored)\b", text, re.IGNORECASE))
    score = 12 * len(requires) + 4 * len(nice) + 3 * min(years, 10) + (5 if led else 0)
    grade = "strong" if score >= 60 else "maybe" if score >= 35 else "no"
    return {
        "name": name,
        "years": years,
        "skills": requires + nice,
        "score": score,
        "class": grade,
        "classifier": classifier,
    }


# -- ranking (the fan-in) -----------------------------------------------------------


def rank(posting: Any, results: list[tuple[str, str, Any]], top: int = TOP) -> dict[str, Any]:
    """The top ``top`` candidates from ``(item id, status, data)`` of every resume.

    Refuses to rank unless every resume is complete: the gate guarantees it,
    and the demo shows it rather than taking it on trust.
    """
    pending = [item for item, status, _ in results if status != "complete"]
    if pending:
        raise PermanentError(
            f"{len(pending)} resume(s) are not classified yet (e.g. {pending[0]}): "
            "the rank step ran before its gate opened"
        )
    scored = [(item, data) for item, _, data in results if isinstance(data, dict) and "score" in data]
    scored.sort(key=lambda pair: (-int(pair[1]["score"]), pair[0]))
    classes: dict[str, int] = {}
    versions: dict[str, int] = {}
    for _, data in scored:
        classes[data["class"]] = classes.get(data["class"], 0) + 1
        versions[data["classifier"]] = versions.get(data["classifier"], 0) + 1
    return {
        "posting": posting.get("id") if isinstance(posting, dict) else posting,
        "considered": len(results),
        "classes": classes,
        "classified_by": versions,
        "top": [
            {
                "resume": item,
                "name": d["name"],
                "score": d["score"],
                "class": d["class"],
                "years": d["years"],
                "skills": d["skills"],
            }
            for item, d in scored[:top]
        ],
    }
