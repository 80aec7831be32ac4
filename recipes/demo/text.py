"""Transcripts of the in-car demo corpus: templates, generated entities, and the train/test split.

Domain: navigation to points of interest, calls to contacts, media, climate, windows, seats, volume
(with numbers) and short confirmations, in English and Mandarin.

Entities are generated so that the test set has names never seen in training, and so that hotwords
are needed to get them right:
- Mandarin names are built from homophone groups (惠 慧 卉 彗 蕙 are all hui4). In training the first
  character of each group is the common one (70% of uses); the others are rare. Test names combine
  rare characters in ways training never saw: without hints a model writes the common character.
- English first names come in spellings with identical pronunciations in CMUdict (Steven / Stephen,
  Jon / John); training uses the first spelling 70% of the time, test names favour the others.
- Mandarin POIs use suffixes (大道, 商场, 体育馆, ...) that the `bench hotwords` generator never uses, so
  a million generated distractors add noise but no exact homophone of a test entity.

References are what an assistant shows: English numbers as digits ("set the temperature to 22
degrees", FSDD's "7"), Mandarin numbers as characters ("二十二度"), which is also how the lexicon
reads them. No punctuation, so the normalization for scoring is small (bench/evaluate.py).
"""

from __future__ import annotations

import random
import zlib
from dataclasses import asdict, dataclass, field

# --- Mandarin -------------------------------------------------------------------------------------

# Homophone groups: syllable -> characters, the common one first (each checked against pypinyin).
ZH_GROUPS = {
    "hui4": "惠慧卉彗蕙", "xin1": "新欣心馨鑫", "ming2": "明铭鸣茗", "jing4": "静靖婧境", "yu3": "雨宇羽语禹",
    "ting2": "婷庭亭霆", "hao4": "浩昊皓灏", "jia1": "佳家嘉珈", "yi4": "艺毅亦逸奕", "lin2": "林琳霖麟",
    "wen2": "文雯闻纹", "zhi4": "志智致治", "hong2": "红宏鸿虹泓", "li4": "丽立力莉励", "feng1": "峰丰枫锋",
    "tao1": "涛韬滔", "qing1": "清青卿", "ping2": "平萍屏苹", "chen2": "晨辰宸臣", "rui4": "瑞锐睿芮",
    "yun2": "云芸耘昀", "xuan1": "宣轩萱暄", "jun4": "俊骏峻郡", "yan4": "燕艳彦砚",
}
ZH_SURNAMES = "王李张刘陈杨黄赵周吴徐孙马胡朱郭何罗高"
ZH_POI_SUFFIXES = ("大道", "商场", "体育馆", "图书馆", "停车场", "加油站", "服务区", "美术馆", "花园", "火车站")
ZH_SONGS = ("月亮代表我的心", "小幸运", "晴天", "稻香", "平凡之路", "后来", "青花瓷", "夜曲", "童年", "光年之外")
ZH_DIGITS = "零一二三四五六七八九"

ZH_TEMPLATES = {
    "poi": ("导航到{poi}", "带我去{poi}", "去{poi}", "帮我导航到{poi}", "到{poi}怎么走"),
    "contact": ("打电话给{contact}", "给{contact}打电话", "呼叫{contact}", "拨打{contact}的电话"),
    "media": ("播放{song}", "我想听{song}", "播放{artist}的歌", "来一首{song}"),
    "climate": ("空调调到{temp}度", "把温度调到{temp}度", "温度调高一点", "温度调低一点", "打开空调", "关闭空调",
                "风量调到{level}档"),
    "window": ("打开车窗", "关闭车窗", "把主驾车窗打开一半", "打开天窗", "关闭所有车窗", "打开副驾车窗"),
    "seat": ("打开座椅加热", "座椅加热调到{level}档", "打开座椅通风", "关闭座椅加热"),
    "volume": ("音量调到{volume}", "调大音量", "调小音量", "静音"),
    "confirm": ("确认", "取消", "好的", "是的", "不用了", "下一首", "返回"),
}

# --- English --------------------------------------------------------------------------------------

# Spellings with identical CMUdict pronunciations, common first (checked by Lexicon in a test).
EN_FIRST_GROUPS = (
    ("Steven", "Stephen"), ("John", "Jon"), ("Sean", "Shawn"), ("Brian", "Bryan"), ("Carl", "Karl"),
    ("Eric", "Erik"), ("Jeffrey", "Geoffrey"), ("Mark", "Marc"), ("Sarah", "Sara"), ("Ann", "Anne"),
    ("Alan", "Allen", "Allan"), ("Zoe", "Zoey"), ("Haley", "Hailey"), ("Lindsay", "Lindsey"),
    ("Teresa", "Theresa"), ("Nicholas", "Nicolas"), ("Cathy", "Kathy"), ("Chris", "Kris"),
    ("Christopher", "Kristopher"), ("Derek", "Derrick"), ("Claire", "Clare", "Clair"), ("Jerry", "Gerry"),
    ("Lewis", "Louis"), ("Matthew", "Mathew"), ("Neil", "Neal"), ("Tony", "Toni"), ("Cindy", "Cyndi"),
    ("Carol", "Carole"),
)
EN_LAST = ("Okafor", "Lindqvist", "Castellano", "Brennan", "Novak", "Fairbanks", "Delgado", "Kowalski", "Nakamura",
           "Oyelaran", "Petrov", "Quintero", "Abernathy", "Haugen", "Moreau", "Whitlock", "Saldana", "Gallagher",
           "Ferreira", "Bianchi", "Lindgren", "Mbeki", "Tanaka", "Horvath", "Duarte", "Rasmussen")
EN_POI_NAMES = ("Lakeview", "Harborside", "Maplewood", "Cedarbrook", "Riverbend", "Stonegate", "Willowdale", "Pinecrest",
                "Brightwater", "Silverlake", "Oakmont", "Redcliff", "Fairhaven", "Northgate", "Bayshore", "Elmhurst",
                "Kingsbridge", "Meadowbrook", "Sunnyvale", "Westfield", "Glenwood", "Ashbury", "Foxhollow", "Larkspur",
                "Copperfield", "Thornbury", "Evergreen", "Highcliffe", "Marigold", "Rosedale", "Bramblewood", "Quarry Hill")
EN_POI_TYPES = ("Mall", "Hospital", "Airport", "Station", "Stadium", "Library", "Plaza", "Park", "Garage", "Hotel",
                "Museum", "Marina")
EN_SONGS = ("Yellow Submarine", "Bohemian Rhapsody", "Hotel California", "Blue Moon", "Purple Rain", "Wonderwall",
            "Clocks", "Starlight", "Halo", "Imagine")
EN_TEMPLATES = {
    "poi": ("navigate to {poi}", "take me to {poi}", "find a route to {poi}", "drive to {poi}", "how far is {poi}"),
    "contact": ("call {contact}", "phone {contact}", "dial {contact}", "call {contact} on mobile",
                "send a message to {contact}"),
    "media": ("play {song}", "play {song} by {artist}", "play some music by {artist}", "play the next song"),
    "climate": ("set the temperature to {temp} degrees", "make it warmer", "make it cooler",
                "turn on the air conditioning", "turn off the air conditioning", "set the fan speed to {level}"),
    "window": ("open the driver window", "close all windows", "open the sunroof", "close the sunroof",
               "open the passenger window halfway"),
    "seat": ("turn on the seat heater", "set the seat heating to level {level}", "turn off the seat heater",
             "turn on seat ventilation"),
    "volume": ("set the volume to {volume}", "turn the volume up", "turn the volume down", "mute"),
    "confirm": ("yes", "no", "cancel", "confirm", "okay", "go back", "next song", "yes please", "no thanks"),
}

# How often each domain is drawn (entities dominate: they are where recognition is hard).
DOMAIN_WEIGHTS = {"poi": 3, "contact": 3, "media": 1.5, "climate": 1.5, "window": 1, "seat": 1, "volume": 1,
                  "confirm": 1}
COMMON_SHARE = 0.7  # training: share of the common character / spelling in an entity slot
TEST_ONLY_SHARE = 5  # one entity in 5 (by a stable hash of its text) may only appear in the test set


def reserved_for_test(entity: str) -> bool:
    """Whether an entity is reserved for the test set: a stable split, independent of draw order."""
    return zlib.crc32(entity.encode("utf-8")) % TEST_ONLY_SHARE == 0


@dataclass(frozen=True)
class Utterance:
    """One transcript to synthesize. `spoken` is what the TTS reads (pinyin for Mandarin)."""

    text: str
    language: str  # "en" or "zh"
    domain: str
    entity: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict:
        data = asdict(self)
        data["tags"] = list(self.tags)
        return data


def zh_number(n: int) -> str:
    """0 <= n < 100 in Chinese numerals (二十二, 十六, 七)."""
    if n < 10:
        return ZH_DIGITS[n]
    tens, ones = divmod(n, 10)
    return ("" if tens == 1 else ZH_DIGITS[tens]) + "十" + ("" if ones == 0 else ZH_DIGITS[ones])


def _pick_variant(options: str | tuple, rng: random.Random, prefer_rare: bool) -> str:
    """Training: common 70%, else a rare one. Test (`prefer_rare`): a rare one."""
    if not prefer_rare and rng.random() < COMMON_SHARE:
        return options[0]
    return options[rng.randrange(1, len(options))]


class EntityMaker:
    """Draws entity names; `rare` makes the hard (homophone / unusual spelling) variants."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.syllables = sorted(ZH_GROUPS)

    def zh_given(self, rare: bool) -> str:
        return "".join(_pick_variant(ZH_GROUPS[s], self.rng, rare) for s in self.rng.sample(self.syllables, 2))

    def zh_contact(self, rare: bool) -> str:
        return self.rng.choice(ZH_SURNAMES) + self.zh_given(rare)

    def zh_poi(self, rare: bool) -> str:
        return self.zh_given(rare) + self.rng.choice(ZH_POI_SUFFIXES)

    def en_contact(self, rare: bool) -> str:
        return f"{_pick_variant(self.rng.choice(EN_FIRST_GROUPS), self.rng, rare)} {self.rng.choice(EN_LAST)}"

    def en_poi(self, rare: bool) -> str:
        return f"{self.rng.choice(EN_POI_NAMES)} {self.rng.choice(EN_POI_TYPES)}"

    def make(self, language: str, domain: str, rare: bool) -> str:
        if domain == "contact":
            return self.zh_contact(rare) if language == "zh" else self.en_contact(rare)
        return self.zh_poi(rare) if language == "zh" else self.en_poi(rare)


def _fill(template: str, language: str, rng: random.Random, entity: str) -> str:
    zh = language == "zh"
    values = {
        "poi": entity, "contact": entity,
        "song": rng.choice(ZH_SONGS if zh else EN_SONGS),
        "artist": entity,
        "temp": str(rng.randint(16, 30)),
        "level": str(rng.randint(1, 3)),
        "volume": str(rng.randint(0, 10)),
    }
    if zh:
        values.update(temp=zh_number(int(values["temp"])), level=zh_number(int(values["level"])),
                      volume=zh_number(int(values["volume"])))
    return template.format(**values)


def make_utterances(count: int, language: str, split: str, seed: int, avoid: set[str] = frozenset()) -> list[Utterance]:
    """`count` transcripts in `language` for `split` ("train" or "test").

    Test entities are never in `avoid` (pass the training entities); half of the test entities are
    drawn rare (tag "homophone"), the rest ordinary but unseen (tag "unseen-entity").
    """
    rng = random.Random(f"{seed}-{language}-{split}")
    maker = EntityMaker(rng)
    templates = ZH_TEMPLATES if language == "zh" else EN_TEMPLATES
    domains = list(DOMAIN_WEIGHTS)
    weights = [DOMAIN_WEIGHTS[d] for d in domains]
    out = []
    while len(out) < count:
        domain = rng.choices(domains, weights)[0]
        template = rng.choice(templates[domain])
        entity, tags = "", [language, domain]
        if "{poi}" in template or "{contact}" in template or "{artist}" in template:
            kind = "poi" if "{poi}" in template else "contact"
            rare = split == "test" and rng.random() < 0.5
            for _ in range(1000):
                entity = maker.make(language, kind, rare)
                if reserved_for_test(entity) == (split == "test") and entity not in avoid:
                    break
            else:
                raise RuntimeError(f"could not draw an unseen {language} {kind} entity; enlarge the pools")
            if split == "test":
                tags.append("homophone" if rare and _has_rare(entity, language) else "unseen-entity")
        out.append(Utterance(_fill(template, language, rng, entity), language, domain, entity, tuple(tags)))
    return out


def _has_rare(entity: str, language: str) -> bool:
    if language == "zh":
        return any(c in group[1:] for group in ZH_GROUPS.values() for c in entity)
    return any(word in group[1:] for group in EN_FIRST_GROUPS for word in entity.split())


def common_form(entity: str, language: str) -> str:
    """The entity with every rare character / spelling replaced by the common one: what a model
    without hints is expected to write."""
    if language == "zh":
        table = {c: group[0] for group in ZH_GROUPS.values() for c in group}
        return "".join(table.get(c, c) for c in entity)
    table = {w: group[0] for group in EN_FIRST_GROUPS for w in group}
    return " ".join(table.get(w, w) for w in entity.split())


def homophone_variant(entity: str, language: str, rng: random.Random) -> str | None:
    """The entity with one character (Mandarin) or first name (English) swapped for another member of
    its homophone group: written differently, pronounced the same. None when it has no such slot."""
    if language == "zh":
        slots = [(i, g) for i, c in enumerate(entity) for g in ZH_GROUPS.values() if c in g]
        if not slots:
            return None
        i, group = rng.choice(slots)
        return entity[:i] + rng.choice([c for c in group if c != entity[i]]) + entity[i + 1 :]
    words = entity.split()
    group = next((g for g in EN_FIRST_GROUPS if words and words[0] in g), None)
    if group is None:
        return None
    return " ".join([rng.choice([w for w in group if w != words[0]])] + words[1:])


def similar_entities(entity: str, language: str, rng: random.Random, count: int) -> list[str]:
    """Distractor hints for context fine-tuning: same shape, one or two slots changed (another
    syllable, another surname / last name), so they sound close but are not the entity."""
    out: list[str] = []
    maker = EntityMaker(rng)
    for _ in range(count * 4):
        if len(out) >= count:
            break
        if language == "zh":
            chars = list(entity)
            i = rng.randrange(len(chars))
            group = next((g for g in ZH_GROUPS.values() if chars[i] in g), None)
            if group is None or rng.random() < 0.3:
                chars[i] = rng.choice(ZH_SURNAMES) if i == 0 else maker.zh_given(False)[0]
            else:
                other = rng.choice([g for g in ZH_GROUPS.values() if g is not group])
                chars[i] = rng.choice(other)
            candidate = "".join(chars)
        else:
            words = entity.split()
            if words[-1] in EN_POI_TYPES:
                if rng.random() < 0.5:
                    words[0] = rng.choice(EN_POI_NAMES)
                else:
                    words[-1] = rng.choice(EN_POI_TYPES)
            elif rng.random() < 0.5:
                words[-1] = rng.choice(EN_LAST)
            else:
                words[0] = rng.choice(rng.choice(EN_FIRST_GROUPS))
            candidate = " ".join(words)
        if candidate != entity and candidate not in out:
            out.append(candidate)
    return out
