#!/usr/bin/env python3
"""Checks the links of the built book and of the repository's top-level Markdown files.

    python3 tools/docs/linkcheck.py [--book docs/book] [--repo .]

- Every internal link and `#anchor` in the built HTML (docs/book) must resolve: a page or file
  of the book, an id on the target page, or (for links that leave the book, such as
  `../../spec/asyncapi.yaml`) a file or folder of the repository.
- Every relative link in README.md, CONTRIBUTING.md, CHANGELOG.md and clients/**/README.md must
  name a file or folder of the repository; an `#anchor` into a Markdown file must match one of
  its headings (GitHub's slugs).
- External http(s) links are only checked for well-formedness: this machine has no network.

Python 3 standard library only. Exit code 0 when every link resolves, 1 otherwise.
"""

import argparse
import glob
import html.parser
import os
import re
import sys
import urllib.parse

SKIP_SCHEMES = ("mailto:", "javascript:", "data:", "tel:")


class Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids = set()
        self.links = []  # (attribute, value, line)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("id", "name"):
            if a.get(key) and (key == "id" or tag == "a"):
                self.ids.add(a[key])
        for key in ("href", "src"):
            if key in a and a[key] is not None and tag in ("a", "img", "link", "script", "iframe", "source"):
                self.links.append((key, a[key], self.getpos()[0]))


def well_formed(url):
    try:
        p = urllib.parse.urlsplit(url)
    except ValueError:
        return False
    return p.scheme in ("http", "https") and bool(p.netloc) and " " not in url


def github_slug(heading):
    text = re.sub(r"<[^>]+>", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text, flags=re.UNICODE)
    return text.replace(" ", "-")


def markdown_anchors(path, cache={}):
    if path not in cache:
        slugs, seen, fence = set(), {}, False
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.lstrip().startswith("```"):
                    fence = not fence
                    continue
                m = None if fence else re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
                if m:
                    slug = github_slug(m.group(2))
                    n = seen.get(slug, 0)
                    seen[slug] = n + 1
                    slugs.add(slug if n == 0 else f"{slug}-{n}")
        cache[path] = slugs
    return cache[path]


def markdown_links(path):
    """(target, line) of every link and image outside code fences and inline code."""
    out, fence = [], False
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.lstrip().startswith("```"):
                fence = not fence
                continue
            if fence:
                continue
            line = re.sub(r"``.*?``|`[^`]*`", "", line)
            for m in re.finditer(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", line):
                out.append((m.group(1), number))
            for m in re.finditer(r"<(https?://[^>\s]+)>", line):
                out.append((m.group(1), number))
            for m in re.finditer(r"(?:href|src)=\"([^\"]+)\"", line):
                out.append((m.group(1), number))
    return out


class Checker:
    def __init__(self, repo):
        self.repo = os.path.realpath(repo)
        self.errors = []
        self.internal = 0
        self.anchors = 0
        self.external = 0

    def error(self, where, message):
        line = f"{where}: {message}"
        if line not in self.errors:
            self.errors.append(line)

    def external_link(self, where, url):
        self.external += 1
        if not well_formed(url):
            self.error(where, f"malformed external link {url!r}")

    def in_repo(self, path):
        real = os.path.realpath(path)
        return real == self.repo or real.startswith(self.repo + os.sep)

    def check_book(self, book):
        book = os.path.realpath(book)
        pages = {}
        for path in glob.glob(os.path.join(book, "**", "*.html"), recursive=True):
            parser = Page()
            with open(path, encoding="utf-8") as f:
                parser.feed(f.read())
            pages[os.path.realpath(path)] = parser
        if not pages:
            self.error(book, "no HTML pages: build the book first (mdbook build docs)")
            return
        for path, page in sorted(pages.items()):
            rel = os.path.relpath(path, self.repo)
            if os.path.basename(path) == "404.html":
                continue  # served from the site root; its links are root-relative by design
            for _, url, line in page.links:
                where = f"{rel}:{line}"
                local = self.local_target(where, path, url)
                if local is None:
                    continue
                resolved, fragment = local
                if os.path.isdir(resolved):
                    index = os.path.join(resolved, "index.html")
                    if resolved.startswith(book + os.sep) or resolved == book:
                        if not os.path.exists(index):
                            self.error(where, f"{url}: folder without index.html")
                            continue
                        resolved = index
                    # else: a folder of the repository (GitHub shows it)
                elif not os.path.exists(resolved):
                    where_to = "the book" if resolved.startswith(book + os.sep) else "the repository"
                    self.error(where, f"{url}: no such file in {where_to} ({os.path.relpath(resolved, self.repo)})")
                    continue
                if fragment:
                    self.anchors += 1
                    fragment = urllib.parse.unquote(fragment)
                    if resolved in pages:
                        if fragment not in pages[resolved].ids:
                            self.error(where, f"{url}: no id {fragment!r} on {os.path.relpath(resolved, self.repo)}")
                    elif resolved.endswith(".md"):
                        if fragment not in markdown_anchors(resolved):
                            self.error(where, f"{url}: no heading {fragment!r} in {os.path.relpath(resolved, self.repo)}")

    def local_target(self, where, source, url):
        """A link's local file and fragment, or None when it is not a local link (skipped,
        external: counted) or leaves the repository (an error)."""
        if url.startswith(SKIP_SCHEMES):
            return None
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", url) or url.startswith("//"):
            self.external_link(where, url)
            return None
        target, _, fragment = url.partition("#")
        target = urllib.parse.unquote(target.split("?", 1)[0])
        self.internal += 1
        resolved = os.path.realpath(os.path.join(os.path.dirname(source), target)) if target else source
        if not self.in_repo(resolved):
            self.error(where, f"{url} leaves the repository")
            return None
        return resolved, fragment

    def check_markdown(self, path):
        rel = os.path.relpath(path, self.repo)
        for url, line in markdown_links(path):
            where = f"{rel}:{line}"
            local = self.local_target(where, path, url)
            if local is None:
                continue
            resolved, fragment = local
            if not os.path.exists(resolved):
                self.error(where, f"{url}: no such file in the repository ({os.path.relpath(resolved, self.repo)})")
                continue
            if fragment and resolved.endswith(".md"):
                self.anchors += 1
                if fragment not in markdown_anchors(resolved):
                    self.error(where, f"{url}: no heading {fragment!r} in {os.path.relpath(resolved, self.repo)}")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", default=os.path.normpath(os.path.join(here, "..", "..")))
    ap.add_argument("--book", default=None, help="the built book (default: <repo>/docs/book)")
    args = ap.parse_args()
    checker = Checker(args.repo)
    book = args.book or os.path.join(args.repo, "docs", "book")
    checker.check_book(book)
    markdown = [os.path.join(args.repo, n) for n in ("README.md", "CONTRIBUTING.md", "CHANGELOG.md")]
    markdown += sorted(glob.glob(os.path.join(args.repo, "clients", "**", "README.md"), recursive=True))
    for path in markdown:
        if os.path.exists(path):
            checker.check_markdown(path)
        elif not path.startswith(os.path.join(args.repo, "clients")):
            checker.error(os.path.relpath(path, args.repo), "missing")
    for e in checker.errors:
        print(f"broken: {e}")
    print(
        f"linkcheck: {checker.internal} internal links and {checker.anchors} anchors checked in "
        f"{os.path.relpath(book, args.repo)} and {len(markdown)} Markdown files; "
        f"{checker.external} external http(s) links checked for well-formedness only "
        f"(no network on this machine, so they were not fetched); {len(checker.errors)} broken"
    )
    return 1 if checker.errors else 0


if __name__ == "__main__":
    sys.exit(main())
