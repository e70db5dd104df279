# google-re2 1.1 (re2/__init__.py): the names proxy/config/regex.py and proxy/http/regex.py use.
from typing import AnyStr, Generic

class error(Exception): ...

class Options:
    max_mem: int
    posix_syntax: bool
    longest_match: bool
    log_errors: bool
    literal: bool
    never_nl: bool
    dot_nl: bool
    never_capture: bool
    case_sensitive: bool
    perl_classes: bool
    word_boundary: bool
    one_line: bool

class _Match(Generic[AnyStr]):
    def group(self, group: int | str = 0, /) -> AnyStr | None: ...
    def start(self, group: int | str = 0, /) -> int: ...
    def end(self, group: int | str = 0, /) -> int: ...
    def span(self, group: int | str = 0, /) -> tuple[int, int]: ...

class _Regexp:
    # Text of either kind: a str is encoded to UTF-8 first; bytes are matched as they are.
    def search(
        self, text: AnyStr, pos: int | None = None, endpos: int | None = None
    ) -> _Match[AnyStr] | None: ...
    def match(
        self, text: AnyStr, pos: int | None = None, endpos: int | None = None
    ) -> _Match[AnyStr] | None: ...
    def fullmatch(
        self, text: AnyStr, pos: int | None = None, endpos: int | None = None
    ) -> _Match[AnyStr] | None: ...
    @property
    def pattern(self) -> str | bytes: ...
    @property
    def groups(self) -> int: ...

def compile(pattern: str | bytes | _Regexp, options: Options | None = None) -> _Regexp: ...
