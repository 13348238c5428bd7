"""User-facing text, in French and English, in one catalogue.

Code raises and reports *codes* with parameters; the text a person reads is
rendered here, so that the CLI, the REST API and the dashboards say the same
thing in the same words.
"""

from __future__ import annotations

from .settings import LANGUAGES, get_settings

CATALOGUE: dict[str, dict[str, str]] = {
    # --- data checks (errors) -------------------------------------------------
    "empty_data": {
        "en": "The data set is empty: it has no rows or no columns.",
        "fr": "Le jeu de données est vide : il n'a aucune ligne ou aucune colonne.",
    },
    "target_missing": {
        "en": "Target column '{target}' is not in the data. Columns: {columns}.",
        "fr": "La colonne cible « {target} » n'existe pas dans les données. Colonnes : {columns}.",
    },
    "target_all_missing": {
        "en": "Target column '{target}' has no values: every cell is empty.",
        "fr": "La colonne cible « {target} » n'a aucune valeur : toutes les cellules sont vides.",
    },
    "target_constant": {
        "en": "Target column '{target}' has a single value ({value}): there is nothing to predict.",
        "fr": "La colonne cible « {target} » n'a qu'une seule valeur ({value}) : il n'y a rien à prédire.",
    },
    "class_too_small": {
        "en": "Class {label!r} of '{target}' has only {count} row(s); each class needs at least {minimum}. Remove or merge the rare classes.",
        "fr": "La classe {label!r} de « {target} » n'a que {count} ligne(s) ; chaque classe en demande au moins {minimum}. Supprimez ou regroupez les classes rares.",
    },
    "target_duplicated": {
        "en": "Column '{column}' is a copy of the target '{target}': remove it, the model would only learn to copy it.",
        "fr": "La colonne « {column} » est une copie de la cible « {target} » : retirez-la, le modèle ne ferait que la recopier.",
    },
    "no_features": {
        "en": "No usable feature column is left besides the target '{target}'.",
        "fr": "Il ne reste aucune colonne utilisable en dehors de la cible « {target} ».",
    },
    "too_few_rows": {
        "en": "Only {count} row(s) with a target value; at least {minimum} are needed to train and validate a model.",
        "fr": "Seulement {count} ligne(s) avec une valeur cible ; il en faut au moins {minimum} pour entraîner et valider un modèle.",
    },
    "target_not_numeric": {
        "en": "Regression needs a numeric target, but '{target}' holds text such as {example!r}.",
        "fr": "Une régression demande une cible numérique, mais « {target} » contient du texte comme {example!r}.",
    },
    "y_length_mismatch": {
        "en": "X has {n_x} rows but y has {n_y}: they must have the same length.",
        "fr": "X a {n_x} lignes mais y en a {n_y} : les deux doivent avoir la même longueur.",
    },
    "target_argument": {
        "en": "Give either y or target=, not both and not neither.",
        "fr": "Donnez soit y, soit target=, mais pas les deux et pas aucun.",
    },
    # --- parameters -----------------------------------------------------------
    "bad_task": {
        "en": "Unknown task '{value}'. Choose one of: {choices}.",
        "fr": "Tâche inconnue « {value} ». Choisissez parmi : {choices}.",
    },
    "bad_metric": {
        "en": "Metric '{value}' does not apply to a {task} task. Choose one of: {choices}.",
        "fr": "La métrique « {value} » ne s'applique pas à une tâche {task}. Choisissez parmi : {choices}.",
    },
    "bad_budget": {
        "en": "The time budget must be a number of seconds between {low} and {high}; got {value!r}.",
        "fr": "Le budget de temps doit être un nombre de secondes entre {low} et {high} ; reçu {value!r}.",
    },
    "bad_max_trials": {
        "en": "max_trials must be a whole number of at least 1; got {value!r}.",
        "fr": "max_trials doit être un nombre entier d'au moins 1 ; reçu {value!r}.",
    },
    "bad_device": {
        "en": "Unknown device '{value}'. Choose one of: auto, cpu, cuda.",
        "fr": "Matériel inconnu « {value} ». Choisissez parmi : auto, cpu, cuda.",
    },
    "cuda_unavailable": {
        "en": "device='cuda' was asked for, but no CUDA GPU is usable here ({reason}). Use device='auto' or 'cpu'.",
        "fr": "device='cuda' est demandé, mais aucun GPU CUDA n'est utilisable ici ({reason}). Utilisez device='auto' ou 'cpu'.",
    },
    "task_mismatch": {
        "en": "task='{task}' does not fit target '{target}' with {n_classes} distinct values.",
        "fr": "task='{task}' ne correspond pas à la cible « {target} » qui a {n_classes} valeurs distinctes.",
    },
    # --- prediction -----------------------------------------------------------
    "not_fitted": {
        "en": "This model is not trained yet: call fit first.",
        "fr": "Ce modèle n'est pas encore entraîné : appelez d'abord fit.",
    },
    "missing_columns": {
        "en": "The data lacks column(s) the model was trained on: {columns}.",
        "fr": "Il manque aux données des colonnes utilisées à l'entraînement : {columns}.",
    },
    "no_proba": {
        "en": "Probabilities exist only for classification; this model does {task}.",
        "fr": "Les probabilités n'existent que pour la classification ; ce modèle fait de la {task}.",
    },
    # --- model files ----------------------------------------------------------
    "model_file_invalid": {
        "en": "'{path}' is not an AutoML model file ({reason}).",
        "fr": "« {path} » n'est pas un fichier de modèle AutoML ({reason}).",
    },
    "model_file_versions": {
        "en": "'{path}' was saved with {library} {saved}, but {current} is installed here. Install {library}=={saved} to load it, or retrain the model.",
        "fr": "« {path} » a été enregistré avec {library} {saved}, mais {current} est installé ici. Installez {library}=={saved} pour le charger, ou réentraînez le modèle.",
    },
    "model_file_format": {
        "en": "'{path}' uses model file format {saved}; this version reads format {current}.",
        "fr": "« {path} » utilise le format de modèle {saved} ; cette version lit le format {current}.",
    },
    # --- guardrails (warnings returned as data) -------------------------------
    "guard_missing_values": {
        "en": "Column '{column}' has {percent:.0f}% missing values; they are imputed.",
        "fr": "La colonne « {column} » a {percent:.0f} % de valeurs manquantes ; elles sont imputées.",
    },
    "guard_target_missing_rows": {
        "en": "{count} row(s) have no target value and were left out of training.",
        "fr": "{count} ligne(s) n'ont pas de valeur cible et ont été écartées de l'entraînement.",
    },
    "guard_class_imbalance": {
        "en": "Classes are imbalanced: '{label}' is only {percent:.1f}% of the rows. Prefer ROC AUC, balanced accuracy or F1 over accuracy.",
        "fr": "Les classes sont déséquilibrées : « {label} » ne représente que {percent:.1f} % des lignes. Préférez ROC AUC, l'exactitude équilibrée ou F1 à l'exactitude.",
    },
    "guard_high_cardinality": {
        "en": "Column '{column}' has {count} distinct values; it is target-encoded.",
        "fr": "La colonne « {column} » a {count} valeurs distinctes ; elle est encodée par la cible.",
    },
    "guard_id_like": {
        "en": "Column '{column}' looks like an identifier (one distinct value per row); it is ignored.",
        "fr": "La colonne « {column} » ressemble à un identifiant (une valeur distincte par ligne) ; elle est ignorée.",
    },
    "guard_constant_column": {
        "en": "Column '{column}' has a single value; it is ignored.",
        "fr": "La colonne « {column} » n'a qu'une seule valeur ; elle est ignorée.",
    },
    "guard_leakage": {
        "en": "Column '{column}' alone predicts the target almost perfectly (score {score:.3f}): check that it is known before the target is.",
        "fr": "La colonne « {column} » prédit presque parfaitement la cible à elle seule (score {score:.3f}) : vérifiez qu'elle est connue avant la cible.",
    },
    "guard_subsampled": {
        "en": "The data has {rows} rows; the search used a sample of {sample} rows to fit in the time budget.",
        "fr": "Les données ont {rows} lignes ; la recherche a utilisé un échantillon de {sample} lignes pour tenir dans le budget de temps.",
    },
    "guard_budget_short": {
        "en": "The time budget ran out after {count} model(s); a longer budget may give a better model.",
        "fr": "Le budget de temps s'est épuisé après {count} modèle(s) ; un budget plus long peut donner un meilleur modèle.",
    },
    # --- files and CLI ---
    "file_not_found": {
        "en": "File '{path}' does not exist.",
        "fr": "Le fichier « {path} » n'existe pas.",
    },
    "file_not_a_file": {
        "en": "'{path}' is a folder, not a file.",
        "fr": "« {path} » est un dossier, pas un fichier.",
    },
    "file_unreadable": {
        "en": "'{path}' cannot be read: {reason}.",
        "fr": "Impossible de lire « {path} » : {reason}.",
    },
    "file_too_large": {
        "en": "'{path}' holds {size_mb:.1f} MB of data; the limit is {limit_mb:.1f} MB.",
        "fr": "« {path} » contient {size_mb:.1f} Mo de données ; la limite est de {limit_mb:.1f} Mo.",
    },
    "file_empty": {
        "en": "'{path}' is empty.",
        "fr": "« {path} » est vide.",
    },
    "file_no_rows": {
        "en": "'{path}' has column names but no data rows.",
        "fr": "« {path} » a des noms de colonnes mais aucune ligne de données.",
    },
    "file_format_unsupported": {
        "en": "'{path}' is in a format that cannot be read ({found}). Supported formats: {formats}.",
        "fr": "« {path} » est dans un format illisible ici ({found}). Formats acceptés : {formats}.",
    },
    "file_wrong_content": {
        "en": "'{path}' is named like a {format} file but does not contain one. If it is a CSV file, rename it to .csv.",
        "fr": "« {path} » porte le nom d'un fichier {format} mais n'en contient pas. Si c'est un fichier CSV, renommez-le en .csv.",
    },
    "file_xls_unsupported": {
        "en": "'{path}' is an old Excel (.xls) or password-protected workbook, which cannot be read here. Save it as .xlsx without a password, or as CSV.",
        "fr": "« {path} » est un classeur Excel ancien (.xls) ou protégé par mot de passe, illisible ici. Enregistrez-le en .xlsx sans mot de passe, ou en CSV.",
    },
    "file_corrupt": {
        "en": "'{path}' is not a valid {format} file ({reason}).",
        "fr": "« {path} » n'est pas un fichier {format} valide ({reason}).",
    },
    "file_not_text": {
        "en": "'{path}' holds binary data, not text: it is neither CSV/TSV nor Parquet nor Excel.",
        "fr": "« {path} » contient des données binaires, pas du texte : ce n'est ni du CSV/TSV, ni du Parquet, ni de l'Excel.",
    },
    "file_encoding": {
        "en": "'{path}' is text in an unknown encoding (neither UTF-8 nor Windows-1252). Save it as UTF-8.",
        "fr": "« {path} » est un texte dans un encodage inconnu (ni UTF-8, ni Windows-1252). Enregistrez-le en UTF-8.",
    },
    "file_delimiter": {
        "en": "'{path}' was read as a single column '{column}', which contains '{delimiter}': the values are probably separated by '{delimiter}' inside quotes. Check how the file was exported.",
        "fr": "« {path} » a été lu comme une seule colonne « {column} », qui contient « {delimiter} » : les valeurs sont sans doute séparées par « {delimiter} » à l'intérieur de guillemets. Vérifiez l'export du fichier.",
    },
    "file_bad_row": {
        "en": "Line {line} of '{path}' has {found} values but the header has {expected} (separator '{delimiter}'). Check the separator and the quotes on that line.",
        "fr": "La ligne {line} de « {path} » a {found} valeurs alors que l'en-tête en a {expected} (séparateur « {delimiter} »). Vérifiez le séparateur et les guillemets de cette ligne.",
    },
    "file_duplicate_columns": {
        "en": "'{path}' has several columns with the same name: {columns}. Give each column a unique name.",
        "fr": "« {path} » a plusieurs colonnes du même nom : {columns}. Donnez à chaque colonne un nom unique.",
    },
    "file_out_format": {
        "en": "Cannot write '{path}': the file name must end with one of {formats}.",
        "fr": "Impossible d'écrire « {path} » : le nom du fichier doit se terminer par l'une de ces extensions : {formats}.",
    },
    "file_out_folder_missing": {
        "en": "Cannot write '{path}': the folder '{folder}' does not exist.",
        "fr": "Impossible d'écrire « {path} » : le dossier « {folder} » n'existe pas.",
    },
    "file_excel_too_many_rows": {
        "en": "Cannot write '{path}': {rows} rows exceed Excel's limit of {limit}. Use .csv or .parquet.",
        "fr": "Impossible d'écrire « {path} » : {rows} lignes dépassent la limite d'Excel ({limit}). Utilisez .csv ou .parquet.",
    },
    "cli_usage": {
        "en": "{detail} (see 'automl --help').",
        "fr": "{detail} (voir « automl --help »).",
    },
    "cli_unexpected": {
        "en": "unexpected failure ({kind}: {detail}).",
        "fr": "échec inattendu ({kind} : {detail}).",
    },
    "cli_os_error": {
        "en": "cannot access '{path}': {reason}.",
        "fr": "accès impossible à « {path} » : {reason}.",
    },
    "cli_interrupted": {
        "en": "interrupted.",
        "fr": "interrompu.",
    },
    "cli_cancelling": {
        "en": "Stopping: keeping the best model found so far (Ctrl-C again to abort)…",
        "fr": "Arrêt : conservation du meilleur modèle trouvé jusqu'ici (Ctrl-C à nouveau pour abandonner)…",
    },
    "cli_cancelled": {
        "en": "Training stopped early at your request.",
        "fr": "Entraînement arrêté plus tôt à votre demande.",
    },
    "cli_first_sheet": {
        "en": "'{path}' has {count} sheets; only the first one, '{sheet}', is read.",
        "fr": "« {path} » a {count} feuilles ; seule la première, « {sheet} », est lue.",
    },
    "cli_training": {
        "en": "Training on {rows} rows and {columns} columns, target '{target}'…",
        "fr": "Entraînement sur {rows} lignes et {columns} colonnes, cible « {target} »…",
    },
    "cli_progress": {
        "en": "Training",
        "fr": "Entraînement",
    },
    "cli_progress_ensemble": {
        "en": "Ensemble",
        "fr": "Ensemble",
    },
    "cli_progress_postfix": {
        "en": "best {best:.4f}, {count} model(s)",
        "fr": "meilleur {best:.4f}, {count} modèle(s)",
    },
    "cli_warnings": {
        "en": "Warnings:",
        "fr": "Avertissements :",
    },
    "cli_leaderboard": {
        "en": "Leaderboard ({metric}, best first):",
        "fr": "Classement ({metric}, le meilleur en premier) :",
    },
    "cli_leaderboard_more": {
        "en": "… and {count} more model(s).",
        "fr": "… et {count} autre(s) modèle(s).",
    },
    "cli_saved": {
        "en": "Model saved to '{path}'.",
        "fr": "Modèle enregistré dans « {path} ».",
    },
    "cli_predictions_written": {
        "en": "{rows} prediction(s) written to '{path}'.",
        "fr": "{rows} prédiction(s) écrite(s) dans « {path} ».",
    },
    "cli_label": {"en": "{label}:", "fr": "{label} :"},
    "sample_written": {
        "en": "{path}: {rows} rows of synthetic customer churn.",
        "fr": "{path} : {rows} lignes de données synthétiques d'attrition client.",
    },
    "cli_info_format": {"en": "Format", "fr": "Format"},
    "cli_info_task": {"en": "Task", "fr": "Tâche"},
    "cli_info_metric": {"en": "Metric", "fr": "Métrique"},
    "cli_info_target": {"en": "Target", "fr": "Cible"},
    "cli_info_classes": {"en": "Classes", "fr": "Classes"},
    "cli_info_versions": {"en": "Library versions", "fr": "Versions des bibliothèques"},
    "cli_info_schema": {"en": "Input columns", "fr": "Colonnes d'entrée"},
    "cli_info_ensemble": {"en": "Ensemble", "fr": "Ensemble"},
    "cli_info_leaderboard": {"en": "Leaderboard", "fr": "Classement"},
    "cli_info_best_model": {"en": "Best model", "fr": "Meilleur modèle"},
    "cli_info_best_score": {"en": "Validation score", "fr": "Score de validation"},
    "cli_info_validation_scores": {"en": "Validation scores", "fr": "Scores de validation"},
    "cli_info_feature_importance": {"en": "Most important columns", "fr": "Colonnes les plus importantes"},
    "cli_info_guardrails": {"en": "Warnings", "fr": "Avertissements"},
    "cli_help_description": {
        "en": "Train, apply and inspect AutoML models from the command line.",
        "fr": "Entraîner, appliquer et inspecter des modèles AutoML en ligne de commande.",
    },
    "cli_help_lang": {
        "en": "language of the messages",
        "fr": "langue des messages",
    },
    "cli_help_train": {
        "en": "search for the best model for a table and save it",
        "fr": "chercher le meilleur modèle pour un tableau et l'enregistrer",
    },
    "cli_help_predict": {
        "en": "apply a saved model to a table and write the predictions",
        "fr": "appliquer un modèle enregistré à un tableau et écrire les prédictions",
    },
    "cli_help_info": {
        "en": "describe a saved model without loading it",
        "fr": "décrire un modèle enregistré sans le charger",
    },
    "cli_help_data": {
        "en": "table: CSV, TSV (also .gz), Parquet or Excel .xlsx",
        "fr": "tableau : CSV, TSV (aussi .gz), Parquet ou Excel .xlsx",
    },
    "cli_help_target": {
        "en": "column to predict",
        "fr": "colonne à prédire",
    },
    "cli_help_time_budget": {
        "en": "search time in seconds (default: 60)",
        "fr": "durée de la recherche en secondes (défaut : 60)",
    },
    "cli_help_metric": {
        "en": "metric to optimise (default: auto)",
        "fr": "métrique à optimiser (défaut : auto)",
    },
    "cli_help_task": {
        "en": "kind of prediction (default: auto, from the target)",
        "fr": "type de prédiction (défaut : auto, d'après la cible)",
    },
    "cli_help_seed": {
        "en": "random seed, for reproducible results (default: 0)",
        "fr": "graine aléatoire, pour des résultats reproductibles (défaut : 0)",
    },
    "cli_help_max_trials": {
        "en": "stop after this many models",
        "fr": "s'arrêter après ce nombre de modèles",
    },
    "cli_help_model_out": {
        "en": "model file to write (default: next to DATA, named DATA.automl)",
        "fr": "fichier de modèle à écrire (défaut : à côté de DATA, nommé DATA.automl)",
    },
    "cli_help_model": {
        "en": "model file written by 'automl train'",
        "fr": "fichier de modèle écrit par « automl train »",
    },
    "cli_help_predictions_out": {
        "en": "file to write: .csv, .csv.gz, .tsv, .parquet or .xlsx",
        "fr": "fichier à écrire : .csv, .csv.gz, .tsv, .parquet ou .xlsx",
    },
    "cli_help_json": {
        "en": "print the metadata as JSON",
        "fr": "afficher les métadonnées en JSON",
    },
}


def language(lang: str | None = None) -> str:
    if lang in LANGUAGES:
        return lang
    return get_settings().default_language


def message(code: str, lang: str | None = None, **params) -> str:
    """Render `code` in `lang` (the deployment's default language when None)."""
    entry = CATALOGUE.get(code)
    if entry is None:
        return code
    template = entry.get(language(lang)) or entry["en"]
    try:
        return template.format(**params)
    except (KeyError, IndexError, ValueError):
        return template
