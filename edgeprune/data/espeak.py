"""Synthesized speech from espeak-ng: the speaker inventory, one call per utterance for audio and phonemes, and
espeak's English phoneme mnemonics mapped to the ARPAbet phones of `edgeprune.tasks.PHONES`.

    speaker = get_speaker("en-gb-x-rp+m3")
    utt = synthesize("turn the lights off", speaker)       # utt.wave: float32 at 16 kHz; utt.phonemes: espeak's
    arpabet(utt.phonemes, speaker.voice)                    # (['T', 'ER', 'N', 'DH', 'AH', ...], [])  (+ unknowns)

Speakers: the eight English voices of espeak-ng 1.51 (`VOICES`, not the mbrola ones, which need extra data) times
the 101 voice variants of `espeak-ng --voices=variant` (`VARIANTS`: formant sets, breathiness, pitch ranges,
whisper, croak, the Klatt synthesizer); every one of them renders speech (checked: audio, level and spectrum).
Each of the 808 speakers has its own base speed, pitch and word gap, drawn from its name, so a speaker sounds the
same in every data set.

Phonemes: `espeak-ng -x --sep=+` writes one mnemonic per phoneme (stress marks ' , % = before vowels, "_:" pauses).
`arpabet` drops stress and pauses, folds the variant forms (a "2" or "#" suffix: @2, I2, t#, r-, ...) onto their
phone, maps diphthongs onto ARPAbet's (aI -> AY, oU -> OW), splits r-coloured and syllabic forms (@L -> AH L,
A@ -> AA R in a rhotic accent), and returns every symbol it has no entry for separately: none is mapped to an
arbitrary phone.
The table covers the mnemonics of espeak-ng 1.51's English phoneme tables: 66 distinct ones appear when the eight
voices speak the word lists of edgeprune.data.speech (alone and in 300 random sentences each, 64k phonemes, none
unknown); the table also holds the rarer ones (the glottal stop "?" of "button" is dropped, x of "loch" is K).
Accents change a few mappings where the sound is another ARPAbet phone: General American (en-us) is rhotic
(3 -> ER, A@ -> AA R); the other voices are not (3 -> AH, A@ -> AA); northern English (Lancaster, West Midlands)
has no FOOT-STRUT split (V -> UH); RP says BATH with AA and CURE with AO.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from math import gcd

import numpy as np

from edgeprune.errors import EdgepruneError

ESPEAK = "espeak-ng"
SAMPLE_RATE = 16000  # what `synthesize` returns; espeak-ng itself writes 22.05 kHz
AMPLITUDE = 25  # espeak's -a (0-200, default 100): some variants clip at 50 and above
MISSING = "espeak-ng not found: install it (apt-get install espeak-ng, or make system-deps)"

VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
VARIANTS = (
    "adam", "Alex", "Alicia", "Andrea", "Andy", "Annie", "antonio", "aunty", "belinda", "benjamin", "boris", "caleb",
    "david", "Demonic", "Denis", "Diogo", "ed", "edward", "edward2", "Gene", "Gene2", "gustave", "announcer",
    "Henrique", "Hugo", "iven", "iven2", "iven3", "iven4", "Jacky", "john", "kaukovalta", "Lee", "linda", "marcelo",
    "Marco", "Mario", "max", "Michael", "michel", "miguel", "Mike", "Mr", "Nguyen", "pablo", "paul", "pedro",
    "quincy", "RicishayMax", "RicishayMax2", "RicishayMax3", "rob", "robert", "robosoft", "robosoft2", "robosoft3",
    "robosoft4", "robosoft5", "robosoft6", "robosoft7", "robosoft8", "steph", "steph2", "steph3", "Storm", "Tweaky",
    "UniRobot", "zac", "anika", "anikaRobot", "AnxiousAndy", "fast", "f2", "f3", "f4", "f5", "whisperf", "grandpa",
    "klatt", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6", "m2", "m3", "m4", "m5", "m6", "m7", "norbert",
    "sandro", "shelby", "travis", "victor", "whisper", "m8", "f1", "croak", "m1", "grandma",
)

# --- phonemes -------------------------------------------------------------------------------------------------------

STRESS = "',%="
# Tokens that are no phone: pauses (_, _:, _!, ...), length and palatalisation marks, syllable and word boundaries,
# and the glottal stop ("button" b'V?n-), which ARPAbet does not have.
IGNORED = frozenset({":", ";", "-", "|", "||", "?"})

# espeak-ng English mnemonic -> ARPAbet, for the non-rhotic accents; see ACCENTS for the others.
PHONEME_MAP: dict[str, tuple[str, ...]] = {
    # schwas and STRUT
    "@": ("AH",), "@2": ("AH",), "@5": ("AH",), "@#": ("AH",), "@-": ("AH",), "a#": ("AH",), "a2": ("AH",),
    "a#2": ("AH",), "V": ("AH",),
    # r-coloured and centring vowels (non-rhotic forms)
    "3": ("AH",), "3:": ("ER",), "IR": ("ER",), "VR": ("ER",), "A@": ("AA",), "O@": ("AO",), "o@": ("AO",),
    "e@": ("EH",), "i@": ("IY", "AH"), "i@3": ("IH", "AH"), "U@": ("UH", "AH"), "aI@": ("AY", "AH"),
    "aI3": ("AY", "ER"), "aU@": ("AW", "AH"),
    # monophthongs
    "a": ("AE",), "aa": ("AE",), "A#": ("AE",), "A:": ("AA",), "0": ("AA",), "0#": ("AA",), "02": ("AA",),
    "E": ("EH",), "E#": ("EH",), "E2": ("EH",), "e#": ("EH",), "I": ("IH",), "I#": ("IH",), "I2": ("IH",),
    "I2#": ("IH",), "i": ("IY",), "i:": ("IY",), "O": ("AO",), "O2": ("AO",), "O:": ("AO",), "U": ("UH",),
    "u:": ("UW",), "e:": ("EY",), "o:": ("OW",),
    # diphthongs
    "aI": ("AY",), "aI2": ("AY",), "aU": ("AW",), "eI": ("EY",), "oU": ("OW",), "oU#": ("OW",), "OI": ("OY",),
    # nasal vowels of loan words
    "A~": ("AA", "N"), "O~": ("AO", "N"),
    # consonants (t# is the American flap, t[ a dental t, r- a linking r, w# the "wh" of Scottish English)
    "p": ("P",), "b": ("B",), "t": ("T",), "t#": ("T",), "t2": ("T",), "t[": ("T",), "d": ("D",), "d#": ("D",),
    "d[": ("D",), "k": ("K",), "g": ("G",), "f": ("F",), "v": ("V",), "T": ("TH",), "D": ("DH",), "s": ("S",),
    "z": ("Z",), "z#": ("Z",), "z/2": ("Z",), "S": ("SH",), "Z": ("ZH",), "h": ("HH",), "x": ("K",), "C": ("HH",),
    "tS": ("CH",), "dZ": ("JH",), "m": ("M",), "m-": ("M",), "n": ("N",), "n-": ("N",), "N": ("NG",),
    "l": ("L",), "l/": ("L",), "l/2": ("L",), "l/3": ("L",), "@L": ("AH", "L"), "r": ("R",), "r-": ("R",),
    "r/": ("R",), "j": ("Y",), "w": ("W",), "w#": ("W",),
}

_RHOTIC = {"3": ("ER",), "A@": ("AA", "R"), "O@": ("AO", "R"), "o@": ("AO", "R"), "e@": ("EH", "R"),
           "i@3": ("IH", "R"), "U@": ("UH", "R"), "aI@": ("AY", "ER"), "aU@": ("AW", "ER")}
ACCENTS: dict[str, dict[str, tuple[str, ...]]] = {
    "en-us": _RHOTIC,
    "en-gb-x-rp": {"aa": ("AA",), "U@": ("AO",)},
    "en-gb-x-gbclan": {"V": ("UH",)},
    "en-gb-x-gbcwmd": {"V": ("UH",)},
}


def words(phonemes: str) -> list[list[str]]:
    """espeak's `-x --sep=+` output -> per word, the phoneme mnemonics without stress marks, pauses or boundary
    marks."""
    out = []
    for word in phonemes.split():
        toks = ["".join(c for c in tok if c not in STRESS) for tok in word.split("+")]
        toks = [t for t in toks if t and not t.startswith("_") and t not in IGNORED]
        if toks:
            out.append(toks)
    return out


def tokens(phonemes: str) -> list[str]:
    """All mnemonics of a phoneme string, in order (see `words`)."""
    return [t for w in words(phonemes) for t in w]


def arpabet(phonemes: str, voice: str = "en-us") -> tuple[list[str], list[str]]:
    """(ARPAbet phones, unknown mnemonics) of an espeak phoneme string in `voice`'s accent. Within a word, an r
    after a rhotic phone is merged into it (espeak writes A@ r, 3: r and 3 r- where one r sounds)."""
    table = PHONEME_MAP | ACCENTS.get(voice, {})
    phones: list[str] = []
    unknown: list[str] = []
    for word in words(phonemes):
        start = len(phones)
        for tok in word:
            mapped = table.get(tok)
            if mapped is None:
                unknown.append(tok)
                continue
            for p in mapped:
                if p == "R" and len(phones) > start and phones[-1] in ("R", "ER"):
                    continue
                phones.append(p)
    return phones, unknown


def phone_ids(phones: list[str]) -> list[int]:
    """ARPAbet phones -> target ids 1..len(PHONES) (0 is the CTC blank)."""
    from edgeprune.tasks import PHONES

    return [PHONES.index(p) + 1 for p in phones]


# --- speakers -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Speaker:
    """One voice (accent) with one variant (voice quality), and its base speed (words/min), pitch (0-99) and
    gap between words (10 ms units)."""

    voice: str
    variant: str
    speed: int
    pitch: int
    gap: int

    @property
    def name(self) -> str:
        return f"{self.voice}+{self.variant}"


def _stable_seed(name: str) -> int:
    return zlib.crc32(name.encode("utf-8"))


@functools.lru_cache(maxsize=None)
def get_speaker(name: str) -> Speaker:
    """The speaker called "voice+variant", with its base parameters (drawn from its name: the same everywhere)."""
    voice, _, variant = name.partition("+")
    if voice not in VOICES or variant not in VARIANTS:
        raise EdgepruneError(f"unknown speaker '{name}'; expected VOICE+VARIANT with a voice of "
                             f"{', '.join(VOICES)} and an espeak-ng variant")
    rng = np.random.default_rng([_stable_seed(name), 1])
    return Speaker(voice, variant, speed=int(rng.integers(135, 186)), pitch=int(rng.integers(25, 76)),
                   gap=int(rng.integers(0, 3)))


def all_speakers() -> list[str]:
    """Every speaker name, variant by variant."""
    return [f"{v}+{var}" for var in VARIANTS for v in VOICES]


# --- espeak-ng ------------------------------------------------------------------------------------------------------


def executable() -> str:
    path = shutil.which(ESPEAK)
    if path is None:
        raise EdgepruneError(MISSING)
    return path


@functools.lru_cache(maxsize=None)
def version() -> str:
    """espeak-ng's version ("1.51"), or the one-line error when it is not installed."""
    out = subprocess.run([executable(), "--version"], capture_output=True, text=True, check=False).stdout
    parts = out.split("text-to-speech:")
    return parts[1].split()[0] if len(parts) > 1 else out.strip()


@functools.lru_cache(maxsize=None)
def check_inventory() -> str:
    """espeak-ng's version, after checking that it has every voice and variant of the inventory."""
    exe = executable()
    have = set()
    for kind in ("en", "variant"):
        out = subprocess.run([exe, f"--voices={kind}"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines()[1:]:
            cols = line.split()
            if len(cols) >= 5:
                have.add(cols[1])  # language (voice)
                have.add(cols[4].rsplit("/", 1)[-1])  # file name (variant)
    missing = [v for v in VOICES + VARIANTS if v not in have]
    if missing:
        raise EdgepruneError(f"espeak-ng {version()} lacks voice(s) {', '.join(missing[:8])}"
                             f"{' ...' if len(missing) > 8 else ''}; expected espeak-ng 1.51's English voices and "
                             "variants (the synthetic speech speakers)")
    return version()


@dataclass
class Utterance:
    wave: np.ndarray  # float32 at SAMPLE_RATE, espeak's own silence included
    phonemes: str  # espeak's -x --sep=+ mnemonics


def _resample(x: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    from scipy.signal import resample_poly

    if rate == target:
        return x.astype(np.float32)
    g = gcd(rate, target)
    return resample_poly(x, target // g, rate // g).astype(np.float32)


def synthesize(text: str, speaker: Speaker, speed: int | None = None, pitch: int | None = None) -> Utterance:
    """Speak `text` as `speaker` (speed and pitch default to the speaker's) in one espeak-ng call: the wave at
    16 kHz and espeak's phoneme mnemonics."""
    from scipy.io import wavfile

    exe = executable()
    speed = int(np.clip(speed if speed is not None else speaker.speed, 80, 450))
    pitch = int(np.clip(pitch if pitch is not None else speaker.pitch, 0, 99))
    fd, wav = tempfile.mkstemp(prefix="edgeprune-espeak-", suffix=".wav")
    os.close(fd)
    try:
        cmd = [exe, "-v", speaker.name, "-s", str(speed), "-p", str(pitch), "-a", str(AMPLITUDE), "-g",
               str(speaker.gap), "-b", "1", "-w", wav, "-x", "--sep=+"]
        proc = subprocess.run(cmd, input=text, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise EdgepruneError(f"espeak-ng failed (exit {proc.returncode}) speaking '{text}' as {speaker.name}: "
                                 f"{(proc.stderr.strip().splitlines() or [''])[-1]}")
        rate, data = wavfile.read(wav)
    finally:
        os.unlink(wav)
    if data.size == 0:
        raise EdgepruneError(f"espeak-ng wrote no audio for '{text}' as {speaker.name}; expected speech")
    audio = data.astype(np.float32) / 32768.0
    return Utterance(_resample(audio, int(rate)), " ".join(proc.stdout.split()))


def phonemize(text: str, voice: str = "en-us") -> str:
    """espeak's phoneme mnemonics for `text` in `voice`, without audio (one line per clause, joined)."""
    proc = subprocess.run([executable(), "-q", "-v", voice, "-b", "1", "-x", "--sep=+"], input=text,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise EdgepruneError(f"espeak-ng failed (exit {proc.returncode}) on voice {voice}: "
                             f"{(proc.stderr.strip().splitlines() or [''])[-1]}")
    return " ".join(proc.stdout.split())


def speech_span(wave: np.ndarray, threshold_db: float = -40.0, frame: int = 160) -> tuple[int, int]:
    """(start, end) samples of the part louder than `threshold_db` below the loudest 10 ms frame."""
    n = len(wave) // frame
    if n == 0:
        return 0, len(wave)
    energy = (wave[: n * frame].reshape(n, frame).astype(np.float64) ** 2).mean(axis=1)
    loud = np.flatnonzero(energy > energy.max() * 10 ** (threshold_db / 10))
    if loud.size == 0:
        return 0, len(wave)
    return int(loud[0] * frame), int(min(len(wave), (loud[-1] + 1) * frame))


def trimmed(wave: np.ndarray) -> np.ndarray:
    """The wave without espeak's leading and trailing silence."""
    start, end = speech_span(wave)
    return wave[start:end]
