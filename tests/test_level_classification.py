"""Level classification ОП1/ОП2/ОП3 by the regulation's definitions of the levels."""
from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from mailbot.config import ClassifyConfig, ConfigError, load_config
from mailbot.parsers.model import MailKind, ParsedMail
from mailbot.rules.base import Context
from mailbot.rules.level import LevelClassification, classify
from mailbot.rules.verdict import Action, Verdict

CONFIG = ClassifyConfig()


def level(text: str, config: ClassifyConfig = CONFIG) -> int:
    return classify(text, config)[0]


@pytest.mark.parametrize("text", [
    "Вопрос по штатному функционированию системы",
    "Прошу помочь с установкой и настройкой АРМ диспетчера",
    "Необходимо выполнить перепривязки контроллеров",
    "Нужна привязка ключа к новому серверу",
    "Линковка объектов не проходит до конца?",
    "Не могу настроить опрос",
])
def test_op1_typical_procedures(text):
    assert level(text) == 1


@pytest.mark.parametrize("text", [
    "Пришлите, пожалуйста, патч для версии 3.2",
    "Просим отправить документацию по модулю",
    "Направляю лог-файлы и скриншоты",
    "Нужно информационное письмо о выходе новой версии",
    "Прошу выслать дистрибутив",
    "Требуется обновление ПО на сервере",
    "Не получили файлы, отправьте повторно",
])
def test_op2_transfer_of_files_and_data(text):
    assert level(text) == 2


@pytest.mark.parametrize("text", [
    "Нештатная работа системы после перезагрузки",
    "Критический сбой сервера опроса",
    "Полный отказ функционирования системы",
    "Сервер не запускается",
    "После сбоя база недоступна",
    "АРМ не работает с утра",
    "Много ошибок в журнале",
    "Авария на объекте, данные не поступают",
    "Служба перестала работать",
])
def test_op3_abnormal_work_failure_outage(text):
    assert level(text) == 3


@pytest.mark.parametrize("text, keyword", [
    ("Требуются перепривязки", "перепривязка"),
    ("Прикладываю лог-файлы", "лог"),
    ("Прикладываю лог-файлы", "файл"),
    ("скриншоты во вложении", "скриншот"),
    ("сервер не запускается", "не запускается"),
    ("после сбоя", "сбой"),
    ("при линковке", "линковка"),
    ("нужен патча", "патч"),
    ("критическая проблема", "критический"),
    ("дистрибутива нет на сайте", "дистрибутив"),
])
def test_inflected_forms_match(text, keyword):
    assert keyword in classify(text, CONFIG)[1]


def test_not_working_is_not_working():
    assert level("Система не работает") == 3
    assert level("Система работает, спасибо") == 1


@pytest.mark.parametrize("text", [
    "Установка прошла без ошибок, нужна настройка",
    "Это не ошибка, а вопрос по настройке",
    "Работаем без сбоев, нужна перепривязка",
])
def test_negated_failure_words_do_not_count(text):
    assert level(text) == 1


def test_the_most_severe_level_wins():
    text = "После установки патча сервер не запускается, лог прилагаю"
    found, reason = classify(text, CONFIG)
    assert found == 3
    assert reason.startswith("level 3: не запускается")
    assert "level 2: патч, лог" in reason and "level 1: установка" in reason
    assert level("Нужна настройка, пришлите документацию") == 2


def test_no_keyword_gives_the_default_level():
    assert classify("Здравствуйте, у нас вопрос", CONFIG) == (
        1, "no keyword matched, default level 1")
    assert level("Здравствуйте", ClassifyConfig(default_level=2)) == 2


def test_op4_is_never_assigned_at_intake():
    assert level("Критический сбой, не предусмотрено инструкциями, полный отказ") == 3


def test_words_are_not_matched_inside_other_words():
    assert level("Не помню логин") == 1  # "лог" is not in "логин"


def test_keywords_come_from_config(tmp_path):
    path = tmp_path / "mailbot.toml"
    path.write_text('[classify]\nop2_keywords = ["выгрузка данных"]\n', encoding="utf-8")
    config = load_config(path, environ={"MAILBOT_CLASSIFY_OP3_KEYWORDS": "зависание,тормозит"})
    assert config.classify.op3_keywords == ("зависание", "тормозит")
    assert classify("Нужна выгрузка данных", config.classify) == (2, "level 2: выгрузка данных")
    assert level("Зависания каждый час", config.classify) == 3
    assert level("Пришлите патч", config.classify) == 1


def test_a_wrong_default_level_names_the_key(tmp_path):
    path = tmp_path / "mailbot.toml"
    path.write_text("[classify]\ndefault_level = 4\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^classify\.default_level"):
        load_config(path, environ={})


def test_thousand_typical_texts_in_well_under_a_second():
    texts = [f"Заявка {i}. Добрый день! После обновления драйверов АРМ диспетчера не запускается, "
             f"лог-файлы и скриншоты прилагаю. Также нужна перепривязка контроллера №{i}. "
             f"С уважением, Иванов Иван Иванович, ООО «Завод», тел. +7 495 000-{i:04d}"
             for i in range(1000)]
    started = time.perf_counter()
    results = [classify(text, CONFIG) for text in texts]
    assert time.perf_counter() - started < 0.5
    assert {found for found, _ in results} == {3}


def mail(subject: str, text: str) -> ParsedMail:
    return ParsedMail(
        message_id="m1@example.test", in_reply_to=(), references=(), subject=subject,
        from_addr="ivanov@zavod.example", from_name="", reply_to=None, to=(), cc=(), date=None,
        return_path=None, text=text, html=None, new_text=text, attachments=(),
        kind=MailKind.HUMAN, kind_reason="", request_numbers=(), incident_numbers=())


def context() -> Context:
    no_lookup = None  # the rule reads no register
    return Context(load_config(None, environ={}), no_lookup, datetime.now(timezone.utc))


def test_the_rule_sets_the_level_of_a_new_request():
    verdict = Verdict()
    LevelClassification().check(mail("Сбой сервера", "Добрый день, см. скриншот"), verdict, context())
    assert verdict.level == 3
    assert verdict.level_reason == "level 3: сбой (also matched level 2: скриншот)"
    assert verdict.reasons == ["level-classification: " + verdict.level_reason]


def test_the_rule_leaves_replies_to_a_request_alone():
    verdict = Verdict(action=Action.APPEND)
    LevelClassification().check(mail("Re: сбой", "Всё ещё не работает"), verdict, context())
    assert verdict.level is None and verdict.reasons == []
