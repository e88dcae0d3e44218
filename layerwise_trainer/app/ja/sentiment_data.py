"""The built-in Japanese sentiment data set: reviews generated deterministically, offline.

It has the schema of the hub set ``tyqiangz/multilingual-sentiments`` (config ``japanese``): columns
``text``, ``source`` and ``label``, with labels 0 positive, 1 neutral, 2 negative, and the splits
``train``, ``validation`` and ``test``. The reviews cover five domains (products, restaurants, films
and books, hotels, apps and services), each sentence assembled from an opening, one to three clauses
about aspects of the item and an optional closing remark, in plain and polite forms. Some reviews
contrast two aspects ("the taste was great, but the wait was awful"); their label follows the last
clause, as Japanese reviews usually put the verdict last.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

LABEL_NAMES = ("positive", "neutral", "negative")
POSITIVE, NEUTRAL, NEGATIVE = 0, 1, 2
SPLIT_FRACTIONS = (("train", 0.8), ("validation", 0.1), ("test", 0.1))
DEFAULT_NUM_EXAMPLES = 6000


@dataclass(frozen=True)
class _Domain:
    name: str
    items: tuple[str, ...]
    aspects: tuple[str, ...]
    openings: tuple[str, ...]
    positive: tuple[str, ...]  # whole clauses about the item, without an aspect
    negative: tuple[str, ...]
    neutral: tuple[str, ...]  # whole neutral sentences; {item} and {aspect} are filled in


# Predicates for "<aspect>は ...": (those that take an intensifier, those that do not).
# Negations cross the word lists on purpose: "悪くなかった" is praise, "良くなかった" is not.
_ASPECT_POSITIVE = (
    ("良かったです", "素晴らしかった", "快適でした", "気に入りました", "丁寧でした", "満足できるものでした"),
    (
        "最高でした",
        "期待以上でした",
        "文句なしでした",
        "申し分ありませんでした",
        "悪くなかったです",
        "不満はまったくありません",
        "思ったほど悪くない",
        "値段のわりに悪くない",
    ),
)
_ASPECT_NEGATIVE = (
    ("悪かったです", "ひどかった", "残念でした", "雑でした", "物足りなかった", "不満でした"),
    (
        "最悪でした",
        "期待外れでした",
        "論外でした",
        "イマイチでした",
        "良くなかったです",
        "満足できませんでした",
        "期待していたほど良くない",
        "値段のわりに良くない",
    ),
)
_INTENSIFIERS = ("", "", "本当に", "とても", "かなり", "思っていたより")

_DOMAINS = (
    _Domain(
        name="product",
        items=(
            "イヤホン",
            "ノートパソコン",
            "掃除機",
            "炊飯器",
            "スマートウォッチ",
            "電気ケトル",
            "マウス",
            "キーボード",
            "加湿器",
            "ドライヤー",
            "充電器",
            "リュック",
            "スニーカー",
            "水筒",
            "電動歯ブラシ",
        ),
        aspects=("音質", "電池の持ち", "使い心地", "デザイン", "作り", "品質", "操作性", "値段", "梱包", "耐久性"),
        openings=(
            "先週買った{item}ですが、",
            "通販で注文した{item}、",
            "セールで見つけた{item}は",
            "プレゼント用に選んだ{item}。",
            "長年使っていた物が壊れて買い替えた{item}、",
            "口コミを見て購入した{item}ですが、",
        ),
        positive=(
            "想像以上にしっかりしています",
            "とても使いやすいです",
            "値段以上の価値があります",
            "軽くて快適です",
            "丁寧に作られています",
            "毎日気持ちよく使えています",
        ),
        negative=(
            "すぐに壊れました",
            "使いにくくて困っています",
            "値段に見合いません",
            "安っぽくてがっかりです",
            "説明と全然違いました",
            "初日から不具合が出ました",
        ),
        neutral=(
            "{item}は昨日届きました。",
            "色は黒を選びました。",
            "{item}の{aspect}については特に気になりません。",
            "まだ数回しか使っていないので、評価はこれからです。",
            "説明書の通りに設定しました。",
            "{item}の{aspect}は普通だと思います。",
            "以前使っていた物と大きな違いはありません。",
        ),
    ),
    _Domain(
        name="restaurant",
        items=("ラーメン屋", "寿司屋", "カフェ", "居酒屋", "パン屋", "定食屋", "焼肉店", "蕎麦屋", "洋食屋"),
        aspects=("味", "接客", "雰囲気", "量", "値段", "待ち時間", "清潔さ", "メニュー"),
        openings=(
            "駅前の{item}に行きました。",
            "友人に勧められた{item}、",
            "初めて入った{item}ですが、",
            "家族で訪れた{item}は",
            "昼休みに寄った{item}、",
        ),
        positive=(
            "本当に美味しかったです",
            "店員さんがとても親切でした",
            "落ち着いていて居心地が良かった",
            "ボリュームたっぷりで大満足です",
            "何を頼んでもはずれがありません",
        ),
        negative=(
            "味が薄くて物足りなかった",
            "店員の態度が悪かった",
            "一時間以上待たされました",
            "テーブルが汚れていて不快でした",
            "料理が冷めていました",
        ),
        neutral=(
            "{item}には昼の十二時ごろに着きました。",
            "日替わり定食を注文しました。",
            "{item}は駅から歩いて五分ほどの場所にあります。",
            "{aspect}は可もなく不可もなくといったところです。",
            "席はカウンターとテーブルがあります。",
            "支払いは現金のみでした。",
        ),
    ),
    _Domain(
        name="media",
        items=("映画", "小説", "ドラマ", "アニメ", "漫画", "舞台"),
        aspects=("ストーリー", "演技", "結末", "映像", "音楽", "登場人物", "展開", "台詞"),
        openings=(
            "話題の{item}を見ました。",
            "話題になっていた{item}、",
            "シリーズ最新作の{item}は",
            "週末に一気に楽しんだ{item}、",
            "原作が好きで手に取った{item}ですが、",
        ),
        positive=(
            "最後まで目が離せませんでした",
            "何度も泣いてしまいました",
            "心に残る作品でした",
            "久しぶりに夢中になりました",
            "見事としか言いようがありません",
        ),
        negative=(
            "途中で眠くなりました",
            "話が雑で入り込めませんでした",
            "時間の無駄でした",
            "最後まで退屈でした",
            "原作の良さが台無しでした",
        ),
        neutral=(
            "{item}の上映時間は二時間ほどです。",
            "全部で十二話あります。",
            "{item}は先月公開されました。",
            "{aspect}については人によって好みが分かれると思います。",
            "原作は読んだことがありません。",
            "字幕版で見ました。",
        ),
    ),
    _Domain(
        name="hotel",
        items=("ホテル", "旅館", "民宿", "ゲストハウス"),
        aspects=("部屋", "朝食", "温泉", "立地", "スタッフの対応", "ベッド", "眺め", "アメニティ"),
        openings=(
            "出張で泊まった{item}、",
            "家族旅行で利用した{item}は",
            "記念日に予約した{item}ですが、",
            "急きょ見つけた{item}に一泊しました。",
        ),
        positive=(
            "清潔で快適に過ごせました",
            "景色が素晴らしかったです",
            "心のこもったおもてなしでした",
            "ぐっすり眠れました",
            "また泊まりたいと思いました",
        ),
        negative=(
            "部屋がかび臭かった",
            "フロントの対応が冷たかった",
            "隣の部屋の音がうるさくて眠れませんでした",
            "写真とまるで違いました",
            "朝食が貧相でした",
        ),
        neutral=(
            "チェックインは十五時からです。",
            "{item}は駅から車で十分ほどです。",
            "二泊三日で利用しました。",
            "{aspect}は標準的でした。",
            "駐車場は予約制です。",
            "部屋は和室を選びました。",
        ),
    ),
    _Domain(
        name="service",
        items=("アプリ", "通販サイト", "配送サービス", "美容院", "スポーツジム", "英会話教室", "クリーニング店"),
        aspects=("使いやすさ", "動作", "サポート", "料金", "予約", "配送", "対応の早さ", "画面"),
        openings=(
            "半年ほど使っている{item}、",
            "最近乗り換えた{item}は",
            "初めて利用した{item}ですが、",
            "会社で導入された{item}、",
        ),
        positive=(
            "とても便利で手放せません",
            "対応が早くて助かりました",
            "迷わず使えます",
            "料金も手頃で満足しています",
            "細かいところまで行き届いています",
        ),
        negative=(
            "何度も落ちて使い物になりません",
            "問い合わせても返事がありません",
            "料金が高すぎます",
            "届くまで二週間もかかりました",
            "解約の手続きが面倒すぎます",
        ),
        neutral=(
            "{item}には先月登録しました。",
            "月額の料金は千円です。",
            "{aspect}は他と同じくらいだと思います。",
            "利用できる時間は朝九時から夜八時までです。",
            "スマホとパソコンの両方で使えます。",
        ),
    ),
)

_JOINERS_SAME = ("。それに、", "。さらに、", "。また、", "。しかも、")
_JOINERS_CONTRAST = ("が、", "けど、", "。ただ、", "。でも、", "。しかし、", "。とはいえ、")
_POSITIVE_CLOSINGS = (
    "また利用したいです。",
    "おすすめします。",
    "買ってよかったです。",
    "星五つです。",
    "大満足です。",
    "人にも勧めたいと思います。",
)
_NEGATIVE_CLOSINGS = (
    "二度と利用しません。",
    "おすすめできません。",
    "お金の無駄でした。",
    "星一つです。",
    "返金してほしいです。",
    "がっかりです。",
)
_BALANCED = (
    "良い点と悪い点があり、総合すると普通です。",
    "良くも悪くもありません。",
    "悪いところも良いところも特に見当たりません。",
    "評判ほど良くも悪くもなく、平均的だと思います。",
    "満足とも不満とも言えません。",
    "期待通りでも期待外れでもありませんでした。",
)
_NEUTRAL_CLOSINGS = ("しばらく様子を見ます。", "以上です。", "参考までに。", "", "")


def _clause(rng: random.Random, domain: _Domain, polarity: int) -> str:
    """One evaluative clause, without the final 。: about an aspect, or about the item as a whole."""
    if rng.random() < 0.35:
        return rng.choice(domain.positive if polarity == POSITIVE else domain.negative)
    intensifiable, plain = _ASPECT_POSITIVE if polarity == POSITIVE else _ASPECT_NEGATIVE
    if rng.random() < 0.6:
        predicate = rng.choice(_INTENSIFIERS) + rng.choice(intensifiable)
    else:
        predicate = rng.choice(plain)
    return f"{rng.choice(domain.aspects)}{rng.choice(('は', 'が', 'も'))}{predicate}"


def _polar_review(rng: random.Random, domain: _Domain, label: int) -> str:
    item = rng.choice(domain.items)
    parts = [rng.choice(domain.openings).format(item=item)] if rng.random() < 0.7 else []
    if rng.random() < 0.2:
        other = NEGATIVE if label == POSITIVE else POSITIVE
        clauses = [_clause(rng, domain, other), _clause(rng, domain, label)]
        joiner = rng.choice(_JOINERS_CONTRAST)
    else:
        clauses = [_clause(rng, domain, label) for _ in range(rng.choice((1, 1, 2)))]
        joiner = rng.choice(_JOINERS_SAME)
    parts.append(joiner.join(clauses) + "。")
    if rng.random() < 0.6:
        parts.append(rng.choice(_POSITIVE_CLOSINGS if label == POSITIVE else _NEGATIVE_CLOSINGS))
    return "".join(parts)


def _neutral_review(rng: random.Random, domain: _Domain) -> str:
    item = rng.choice(domain.items)
    sentences = rng.sample(domain.neutral, k=rng.choice((1, 2, 2, 3)))
    if rng.random() < 0.25:
        sentences.insert(rng.randrange(len(sentences) + 1), rng.choice(_BALANCED))
    text = "".join(sentence.format(item=item, aspect=rng.choice(domain.aspects)) for sentence in sentences)
    return text + rng.choice(_NEUTRAL_CLOSINGS)


def generate_reviews(num_examples: int = DEFAULT_NUM_EXAMPLES, seed: int = 0) -> list[dict[str, object]]:
    """Distinct reviews with balanced labels, the same ones for the same arguments.

    Args:
        num_examples: How many reviews (at least 30).
        seed: The random seed.

    Returns:
        Rows with ``text``, ``source`` (``builtin/<domain>``) and ``label`` (0 positive, 1 neutral,
        2 negative), shuffled.

    Raises:
        ValueError: ``num_examples`` is below 30 or above what the generator can make distinct.
    """
    if num_examples < 30:
        raise ValueError(f"num_examples must be at least 30, got {num_examples}")
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    seen: set[str] = set()
    attempts = 0
    while len(rows) < num_examples:
        attempts += 1
        if attempts > num_examples * 50:
            raise ValueError(f"cannot generate {num_examples} distinct reviews; ask for fewer")
        label = len(rows) % len(LABEL_NAMES)
        domain = rng.choice(_DOMAINS)
        text = _neutral_review(rng, domain) if label == NEUTRAL else _polar_review(rng, domain, label)
        if text in seen:
            continue
        seen.add(text)
        rows.append({"text": text, "source": f"builtin/{domain.name}", "label": label})
    rng.shuffle(rows)
    return rows


def split_rows(rows: Sequence[dict[str, object]]) -> dict[str, list[dict[str, object]]]:
    """Cut rows into train (80 %), validation (10 %) and test (10 %), in order."""
    splits: dict[str, list[dict[str, object]]] = {}
    start = 0
    for index, (name, fraction) in enumerate(SPLIT_FRACTIONS):
        end = len(rows) if index == len(SPLIT_FRACTIONS) - 1 else start + round(len(rows) * fraction)
        splits[name] = list(rows[start:end])
        start = end
    return splits


def japanese_sentiment_dataset(num_examples: int = DEFAULT_NUM_EXAMPLES, seed: int = 0):  # -> datasets.DatasetDict
    """The built-in data set as a ``datasets.DatasetDict`` with the hub set's schema.

    Args:
        num_examples: Reviews in all splits together.
        seed: The random seed.

    Returns:
        ``DatasetDict`` with ``train``, ``validation`` and ``test``; ``label`` is a ``ClassLabel``
        with names ``positive``, ``neutral``, ``negative``.

    Example:
        ```python
        data = japanese_sentiment_dataset()
        data["train"][0]  # {'text': '...', 'source': 'builtin/hotel', 'label': 2}
        ```
    """
    import datasets

    features = datasets.Features(
        {
            "text": datasets.Value("string"),
            "source": datasets.Value("string"),
            "label": datasets.ClassLabel(names=list(LABEL_NAMES)),
        }
    )
    splits = split_rows(generate_reviews(num_examples, seed))
    return datasets.DatasetDict(
        {name: datasets.Dataset.from_list(rows, features=features) for name, rows in splits.items()}
    )
